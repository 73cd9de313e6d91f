"""`adept chat`: a terminal conversation with trained adapters on their base, replies streamed."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from .common import console, examples, fail, require_at_least, user_errors, warn

EXAMPLES = examples(
    ("Talk to a run's adapter", "adept chat --run runs/sst2-adept"),
    (
        "Two adapters, switch with /adapter NAME (or /adapter none: the bare base)",
        "adept chat --adapter a=runs/a --adapter b=runs/b --temperature 0",
    ),  # fmt: skip
    ("Seeded sampling, longer replies", "adept chat --run runs/chat-adept --temperature 0.8 --seed 7 --max-tokens 512"),
)
HELP = (
    "/reset: a new conversation · /adapter NAME: answer with NAME (none: the bare base) · /save FILE: the "
    "conversation as JSON lines · /help · /quit (or Ctrl-D). Ctrl-C stops a reply."
)


@user_errors
def chat_command(
    run: Annotated[Path | None, typer.Option("--run", help="A run directory: its best adapter.")] = None,
    adapter: Annotated[
        list[str] | None, typer.Option("--adapter", "-a", help="NAME=PATH of a run or adapter; repeat for more.")
    ] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Base model (default: the adapters').")] = None,
    temperature: Annotated[float, typer.Option("--temperature", help="0: greedy.")] = 0.7,
    top_p: Annotated[float, typer.Option("--top-p", help="Nucleus sampling's probability mass.")] = 1.0,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of the sampling (the same replies again).")] = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="Most new tokens of a reply.")] = 256,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N.")] = "auto",
) -> None:
    """Chat in the terminal with trained adapters on their base: replies stream as they are generated,
    the conversation is formatted with the chat template the adapter was trained with (causal models keep
    the whole conversation; seq2seq ones answer each message alone). Lines starting with / are commands:
    /reset, /adapter NAME, /save FILE, /help, /quit. Ctrl-C stops a reply, Ctrl-D quits."""
    from ..serving.protocol import Sampling
    from .serve import _load, _parse_adapters

    require_at_least(1, max_tokens=max_tokens)
    if not 0.0 <= temperature <= 2.0 or not 0.0 < top_p <= 1.0:
        fail(f"--temperature must be within [0, 2] and --top-p within (0, 1]; got {temperature}, {top_p}")
    pairs = _parse_adapters(adapter or [])
    if run is not None:
        if not run.is_dir():
            fail(f"--run {run}: not a directory")
        pairs.insert(0, (run.resolve().name, run))
    if not pairs and model is None:
        fail("give --run RUN or --adapter NAME=PATH (or --model to talk to a base model alone)")
    engine = _load(pairs, {}, model, device, "builtin", "", (1, 0.0))
    from ..chatting import Conversation

    sampling = Sampling(temperature, top_p, seed)
    conversation = Conversation(engine, pairs[0][0] if pairs else None, sampling, max_tokens)
    _talk(conversation)


def _talk(conversation: Any) -> None:
    names = ", ".join(conversation.engine.adapters) or "none"
    console.print(f"adept chat: {_who(conversation)} (adapters: {names}). {HELP}", highlight=False, soft_wrap=True)
    if not conversation.multi_turn:
        console.print("a seq2seq model: each message is answered on its own", highlight=False)
    if conversation.template() is None:
        console.print("no chat template: turns are written as plain 'User:' / 'Assistant:' lines", highlight=False)
    read_line = _line_reader()
    while True:
        try:
            line = read_line()
        except EOFError:
            console.print()
            return
        except KeyboardInterrupt:  # at the prompt: a new line, not the end
            console.print()
            continue
        line = line.strip()
        if not line:
            continue
        if line.startswith("/"):
            if not _command(conversation, line):
                return
            continue
        _answer(conversation, line)


def _line_reader() -> Any:
    """prompt-toolkit's line editing and history at a terminal (the [chat] extra), else plain lines."""
    if not sys.stdin.isatty():
        return lambda: input("")
    try:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import InMemoryHistory
    except ImportError:
        console.print("line editing: the terminal's own (pip install 'adept-cli[chat]' for editing and history)",
                      highlight=False)  # fmt: skip
        return lambda: input("> ")
    session: Any = PromptSession(history=InMemoryHistory())
    return lambda: session.prompt("> ")


def _who(conversation: Any) -> str:
    return (
        f"adapter {conversation.adapter!r}"
        if conversation.adapter
        else f"the bare base {conversation.engine.model_name}"
    )


def _answer(conversation: Any, message: str) -> None:
    from ..errors import AdeptError

    stop, done, outcome = threading.Event(), threading.Event(), {}

    def work() -> None:
        try:
            outcome["reply"] = conversation.reply(message, _write, stop)
        except (AdeptError, RuntimeError) as error:
            outcome["error"] = error
        finally:
            done.set()

    threading.Thread(target=work, daemon=True).start()
    while not done.is_set():
        try:
            done.wait(0.1)
        except KeyboardInterrupt:  # stops this reply; the conversation goes on
            stop.set()
    sys.stdout.write("\n")
    sys.stdout.flush()
    if "error" in outcome:
        warn(str(outcome["error"]))
    elif outcome["reply"].finish_reason == "cancelled":
        console.print("[stopped]", highlight=False, markup=False)


def _write(piece: str) -> None:
    sys.stdout.write(piece)
    sys.stdout.flush()


def _command(conversation: Any, line: str) -> bool:
    """Run a slash command; False to end the chat."""
    command, _, argument = line.partition(" ")
    argument = argument.strip()
    if command in ("/quit", "/exit"):
        return False
    if command == "/reset":
        conversation.reset()
        console.print("a new conversation", highlight=False)
    elif command == "/adapter":
        names = list(conversation.engine.adapters)
        if argument == "none":
            conversation.adapter = None
        elif argument in names:
            conversation.adapter = argument
        else:
            warn(
                f"/adapter takes one of: {', '.join(names) or '(none loaded)'}, or none (the bare base); "
                f"got {argument!r}"
            )
            return True
        console.print(f"now {_who(conversation)} answers", highlight=False)
    elif command == "/save":
        if not argument:
            warn("/save needs a file name: /save chat.jsonl")
            return True
        try:
            path = conversation.save(Path(argument))
        except OSError as error:
            warn(f"/save {argument}: {error.strerror or error}")
            return True
        console.print(f"wrote {path} ({len(conversation.messages)} messages)", highlight=False)
    else:
        console.print(HELP, highlight=False)
    return True
