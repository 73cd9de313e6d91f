"""Instruction data in the shapes other fine-tuning tools read, as examples.

- ``messages``: ``{"messages": [{"role": "system" | "user" | "assistant", "content": "..."}, ...]}`` (OpenAI
  chat); the last message is the assistant's reply to learn, the earlier ones are the context.
- ``alpaca``: ``{"instruction": ..., "input": ... (optional), "output": ...}``.
- ``prompt_completion``: ``{"prompt": ..., "completion": ...}``; both may also be message lists (TRL's
  conversational form).

Every row becomes one example whose target is the reply, so the loss covers the reply only (and the
chat template's end of turn). With a chat template the context messages are rendered by the template
itself (see `Encoder.prompt_ids`); without one, `source` is a plain transcript ending in a cue.
"""

from __future__ import annotations

from typing import Any

from .example import Example, RowError

FORMATS = ("messages", "alpaca", "prompt_completion")
SHAPES = {
    "messages": "a 'messages' list",
    "alpaca": "'instruction' and 'output'",
    "prompt_completion": "'prompt' and 'completion'",
}


def detect_format(row: dict[str, Any], need_reply: bool = True) -> str:
    """The format a row is written in, judged by its fields (a row to answer may lack the reply)."""
    if "messages" in row:
        return "messages"
    if "instruction" in row and ("output" in row or not need_reply):
        return "alpaca"
    if "prompt" in row and ("completion" in row or not need_reply):
        return "prompt_completion"
    raise RowError(
        "the row is in no instruction format: expected " + ", ".join(SHAPES.values()) + f"; it has {sorted(row)}"
    )


def instruction_example(row: dict[str, Any], data_format: str) -> Example:
    """A training / evaluation row: the context and the reply to learn."""
    fmt = detect_format(row) if data_format == "auto" else data_format
    if fmt == "messages":
        context, reply = _split_conversation(_messages(row.get("messages"), "messages"))
    elif fmt == "prompt_completion" and isinstance(row.get("prompt"), list):
        # conversational: the completion is the assistant's message(s)
        completion = row.get("completion")
        answer = _messages(completion, "completion") if isinstance(completion, list) else None
        if not answer or answer[-1]["role"] != "assistant":
            raise RowError("field 'completion' must be a list ending in an assistant message when 'prompt' is one")
        context, reply = _split_conversation(_messages(row["prompt"], "prompt") + answer)
    else:
        context, reply = _context(row, fmt), _text(row, "output" if fmt == "alpaca" else "completion")
    if not reply.strip():
        raise RowError("the reply to learn is empty")
    return _example(context, fmt, reply.strip())


def query_example(row: dict[str, Any] | str, data_format: str) -> Example:
    """A row to answer (`adept predict`, `/v1/predict`): its context only; a reply it carries is ignored.
    A plain string is one user message."""
    if isinstance(row, str):
        context = [{"role": "user", "content": row}]
        return _example(context, "prompt_completion" if data_format == "prompt_completion" else "messages", "")
    fmt = detect_format(row, need_reply=False) if data_format == "auto" else data_format
    if fmt == "messages" or isinstance(row.get("prompt"), list):
        context = _messages(row.get("messages" if fmt == "messages" else "prompt"), fmt)
        if context[-1]["role"] == "assistant":  # the gold reply of a labelled row
            context = context[:-1]
        if not context or all(m["role"] == "assistant" for m in context):
            raise RowError("a conversation to answer needs a user (or system) message")
        return _example(context, fmt, "")
    return _example(_context(row, fmt), fmt, "")


def _context(row: dict[str, Any], fmt: str) -> list[dict[str, str]]:
    if fmt == "alpaca":
        instruction, extra_input = _text(row, "instruction"), row.get("input") or ""
        if not isinstance(extra_input, str):
            raise RowError(f"field 'input' must be a string; got {extra_input!r}")
        return [{"role": "user", "content": instruction + (f"\n\n{extra_input}" if extra_input.strip() else "")}]
    if fmt == "prompt_completion":
        return [{"role": "user", "content": _text(row, "prompt")}]
    raise RowError(f"unknown instruction format {fmt!r}; expected auto, {', '.join(FORMATS)}")


def _example(context: list[dict[str, str]], fmt: str, reply: str) -> Example:
    plain_prompt = fmt == "prompt_completion" and len(context) == 1
    source = context[0]["content"] if plain_prompt else plain_transcript(context)
    return Example(source, reply, references=(reply,) if reply else (), extra={"messages": context})


def plain_transcript(messages: list[dict[str, str]]) -> str:
    """The context as text for a model read without a chat template; ends in the cue for the reply."""
    turns = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n\n".join([*turns, "Assistant:"])


def _split_conversation(messages: list[dict[str, str]]) -> tuple[list[dict[str, str]], str]:
    if len(messages) < 2 or messages[-1]["role"] != "assistant":
        raise RowError("a conversation must end with the assistant's reply, after at least one other message")
    if all(m["role"] == "assistant" for m in messages[:-1]):
        raise RowError("a conversation needs a user (or system) message before the reply")
    return messages[:-1], messages[-1]["content"]


def _messages(value: Any, name: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise RowError(f"field {name!r} must be a non-empty list of {{role, content}} messages; got {value!r}")
    out = []
    for i, message in enumerate(value):
        ok = isinstance(message, dict) and isinstance(message.get("role"), str) and message.get("role")
        content = _text_content(message.get("content")) if ok else None
        if content is None:
            raise RowError(
                f"{name}[{i}] must be an object with a string 'role' and a 'content' that is text (a string, or "
                f"a list of {{type: text, text: ...}} parts); got {message!r}"
            )
        out.append({"role": message["role"], "content": content})
    return out


def _text_content(content: Any) -> str | None:
    """A message's text: a string, or OpenAI's list of content parts when every part is text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content:
        texts = [
            part.get("text") if isinstance(part, dict) and part.get("type") == "text" else None for part in content
        ]
        if all(isinstance(text, str) for text in texts):
            return "".join(texts)
    return None


def _text(row: dict[str, Any], name: str) -> str:
    value = row.get(name)
    if not isinstance(value, str):
        problem = "is missing" if value is None else f"must be a string; got {value!r}"
        raise RowError(f"field {name!r} {problem}")
    return value
