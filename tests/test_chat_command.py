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
