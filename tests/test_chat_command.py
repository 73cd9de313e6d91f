"""`adept chat`, driven through its input stream: replies equal the engine's own generation of the same
conversation (greedy), turns accumulate, /adapter switches (none: the bare base), /reset starts over,
/save writes the conversation as JSON lines; a reply stops when asked; bad commands answer, never end the
chat. The real stories260K (no chat template: plain User / Assistant lines)."""

from __future__ import annotations

import json
import threading

from typer.testing import CliRunner

from adept_cli import save_adapter
from adept_cli.chatting import Conversation
from adept_cli.cli import app
from adept_cli.prompt.adapter_files import EVALUATION_KEY
from adept_cli.serving.engine import Engine
from adept_cli.serving.protocol import GenerationRow, Sampling

from .helpers import perturb, stories, wrap


def adapter(folder):
    model, _ = wrap("adept", "llama", prompt_len=3)
    perturb(model, seed=5)
    return save_adapter(model, folder, extra={EVALUATION_KEY: {"task": "sst2", "max_length": 64}})


def expected_reply(path, name: str | None, conversation: list[dict], message: str, max_tokens: int) -> str:
    """The engine's own greedy generation of the plain-text conversation."""
    base, tokenizer = stories()
    engine = Engine(base, tokenizer, "base")
    engine.add("a", path)
    talk = Conversation(
        engine, name, Sampling(), max_tokens, [{"role": m["role"], "content": m["content"]} for m in conversation]
    )
    ids = tokenizer(talk.prompt_text(message))["input_ids"]
    return engine.generate([GenerationRow(name, ids, max_tokens)], Sampling())[0].text


def test_a_conversation_through_the_input_stream(tmp_path) -> None:
    path = adapter(tmp_path / "a")
    lines = ["Once upon a time", "What did Lily see?", "/adapter none", "The cat", "/adapter nope", "/frob",
             f"/save {tmp_path / 'chat.jsonl'}", "/reset", "Tom and his dog", "/quit", "never read"]  # fmt: skip
    result = CliRunner().invoke(
        app,
        ["chat", "--adapter", f"a={path}", "--temperature", "0", "--max-tokens", "6"],
        input="\n".join(lines) + "\n",
    )
    assert result.exit_code == 0, result.output
    saved = [json.loads(line) for line in (tmp_path / "chat.jsonl").read_text().splitlines()]
    assert [m["role"] for m in saved] == ["user", "assistant"] * 3
    assert [m["adapter"] for m in saved] == ["a", "a", "a", "a", None, None]  # who each message was for
    first = expected_reply(path, "a", [], "Once upon a time", 6)
    second = expected_reply(path, "a", saved[:2], "What did Lily see?", 6)
    third = expected_reply(path, None, saved[:4], "The cat", 6)
    assert [saved[1]["content"], saved[3]["content"], saved[5]["content"]] == [first, second, third]
    for reply in (first, second, third):
        assert reply in result.output
    assert "/adapter takes one of: a, or none" in result.output and "/reset: a new conversation" in result.output
    assert "no chat template" in result.output and "never read" not in result.output
    base, tokenizer = stories()  # the plain layout, written out: each turn a line, the history kept
    talk = Conversation(Engine(base, tokenizer, "base"), None, Sampling(), 6, [dict(saved[0]), dict(saved[1])])
    for message in talk.messages:
        message.pop("adapter")
    assert talk.prompt_text("Q") == f"User: Once upon a time\nAssistant: {first}\nUser: Q\nAssistant:"
    after_reset = expected_reply(path, None, [], "Tom and his dog", 6)
    assert after_reset in result.output


def test_a_reply_asked_to_stop_ends_at_the_next_token(tmp_path) -> None:
    base, tokenizer = stories()
    engine = Engine(base, tokenizer, "base")
    conversation = Conversation(engine, None, Sampling(), max_tokens=200)
    stop, pieces = threading.Event(), []

    def on_text(piece: str) -> None:
        pieces.append(piece)
        stop.set()  # as Ctrl-C does from the terminal

    reply = conversation.reply("Once upon a time", on_text, stop)
    assert reply.finish_reason == "cancelled" and len(tokenizer(reply.text)["input_ids"]) < 20
    assert conversation.messages[-1] == {"role": "assistant", "content": reply.text}


def test_bad_options_are_one_line() -> None:
    for args, words in (
        (["chat"], "--run RUN or --adapter"),
        (["chat", "--model", "x", "--temperature", "3"], "temperature"),
    ):
        result = CliRunner().invoke(app, args)
        assert result.exit_code != 0 and words in result.output and "Traceback" not in result.output


def test_a_conversation_in_a_real_terminal(tmp_path) -> None:
    """Through a pseudo-terminal, as a person types: prompt-toolkit reads the line, the reply streams
    (equal to the engine's greedy generation), Ctrl-C at the prompt gives a new prompt and not the end,
    Ctrl-D quits cleanly."""
    import os
    import pty
    import re
    import select
    import sys

    from .helpers import STORIES, model_path, wait_until

    path = adapter(tmp_path / "a")
    expected = expected_reply(path, "a", [], "Once upon a time", 24)
    pid, terminal = pty.fork()
    if pid == 0:  # the child: adept chat on the terminal's other end
        os.environ["PROMPT_TOOLKIT_NO_CPR"] = "1"  # no cursor-position query that nothing here would answer
        os.execv(sys.executable, [sys.executable, "-m", "adept_cli", "chat", "--adapter", f"a={path}", "--model",
                                  model_path(STORIES), "--temperature", "0", "--max-tokens", "24"])  # fmt: skip
    seen = bytearray()

    def read_some() -> bytes:
        if select.select([terminal], [], [], 0.05)[0]:
            try:
                seen.extend(os.read(terminal, 65536))
            except OSError:  # the child has gone
                pass
        return bytes(seen)

    def prompts() -> int:  # prompt-toolkit turns bracketed paste on as each prompt starts
        return read_some().count(b"\x1b[?2004h")

    try:
        wait_until(lambda: prompts() >= 1, "the first prompt", timeout=120)
        os.write(terminal, b"Once upon a time\r")
        wait_until(lambda: prompts() >= 2, "the reply and the next prompt", timeout=120)
        text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", bytes(seen).decode(errors="replace")).replace("\r", "")
        assert expected.strip() and expected in text
        os.write(terminal, b"\x03")  # Ctrl-C at the prompt
        wait_until(lambda: prompts() >= 3, "a new prompt after Ctrl-C", timeout=60)
        os.write(terminal, b"\x04")  # Ctrl-D
        ended = []

        def child_ended() -> bool:
            read_some()  # keep the terminal drained so the child never blocks on a write
            done, status = os.waitpid(pid, os.WNOHANG)
            if done == pid:
                ended.append(status)
            return bool(ended)

        wait_until(child_ended, "the chat to end", timeout=60)
        assert os.waitstatus_to_exitcode(ended[0]) == 0
    except BaseException:
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):  # already reaped
            pass
        raise
    finally:
        os.close(terminal)
