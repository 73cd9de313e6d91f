"""Examples -> token ids -> padded batches, for seq2seq and causal models alike.

Seq2seq: the source is the encoder input, the target (with the tokenizer's end token) the labels.
Causal: one sequence source + " " + target + EOS; labels cover the target and EOS only.
Sources longer than `max_length` lose their *beginning*, so the question and the answer cue that end
every template survive truncation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .errors import AdeptError
from .tasks.example import Example

IGNORE_INDEX = -100


# Placeholders rendered into a chat template to find where the task's text and the answer go.
_SOURCE, _TARGET = "\ue000source\ue000", "\ue000target\ue000"


class ChatTemplateError(AdeptError, ValueError):
    """A chat template cannot be used; the message says why."""


@dataclass(frozen=True)
class ChatFormat:
    """A chat template split around the task's text: `before` + source + `after` is the user turn and the
    opening of the assistant's (the generation prompt); after the target comes `end`, the close of the
    assistant's turn."""

    before: str
    after: str
    end: str
    template: str = ""  # the Jinja text, to render whole conversations (instruction data)

    @classmethod
    def from_template(cls, tokenizer: Any, template: str) -> ChatFormat:
        def render(messages: list[dict[str, str]], prompt: bool) -> str:
            try:
                return tokenizer.apply_chat_template(
                    messages, chat_template=template, add_generation_prompt=prompt, tokenize=False
                )
            except Exception as error:  # jinja2 raises its own error types for a bad template
                raise ChatTemplateError(f"the chat template cannot be rendered: {error}") from None

        user = render([{"role": "user", "content": _SOURCE}], prompt=True)
        turns = render([{"role": "user", "content": _SOURCE}, {"role": "assistant", "content": _TARGET}], False)
        head, found, end = turns.partition(_TARGET)
        if user.count(_SOURCE) != 1 or not found or head != user:
            raise ChatTemplateError(
                "the chat template does not render one user turn followed by the assistant's as its generation "
                "prompt does; adept cannot place the task's text and answer in it"
            )
        before, _, after = user.partition(_SOURCE)
        return cls(before, after, end, template)


@dataclass
class Encoder:
    tokenizer: Any
    is_seq2seq: bool
    max_length: int = 256
    max_target_length: int = 128
    chat: ChatFormat | None = None  # wrap inputs as a user turn and targets as the assistant's

    def __post_init__(self) -> None:
        self.tokenizer.truncation_side = "left"

    def source_ids(self, text: str) -> list[int]:
        if self.chat is not None:
            chat = self.chat
            return self._truncated_inside(chat.before + text + chat.after, len(chat.before), len(chat.before + text))
        return self.tokenizer(text, truncation=True, max_length=self.max_length)["input_ids"]

    def prompt_ids(self, example: Example) -> list[int]:
        """What the model reads for `example`: instruction data's context messages rendered by the chat
        template when there is one, else the example's source text."""
        messages = example.extra.get("messages")
        if self.chat is None or not messages:
            return self.source_ids(example.source)
        try:
            rendered = self.tokenizer.apply_chat_template(
                messages, chat_template=self.chat.template, add_generation_prompt=True, tokenize=False
            )
        except Exception as error:  # jinja2 raises its own types, and templates raise on roles they refuse
            roles = ", ".join(m["role"] for m in messages)
            raise ChatTemplateError(f"the chat template cannot render a conversation of {roles}: {error}") from None
        start = rendered.find(messages[0]["content"])
        end = rendered.rfind(messages[-1]["content"]) + len(messages[-1]["content"])
        return self._truncated_inside(rendered, max(start, 0), max(end, start))

    def target_ids(self, text: str) -> list[int]:
        """The tokens the model should produce for `text`, end token included."""
        if self.is_seq2seq:
            ids = self.tokenizer(text_target=text, truncation=True, max_length=self.max_target_length)["input_ids"]
            return _strip_leading_bos(ids, self.tokenizer)
        if self.chat is not None:  # the answer, then the template's close of the assistant turn
            end = self._plain(self.chat.end)
            return self._plain(text)[: max(self.max_target_length - len(end), 1)] + end
        ids = self.tokenizer(" " + text, add_special_tokens=False)["input_ids"][: self.max_target_length - 1]
        return ids + [self.tokenizer.eos_token_id]

    def _plain(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _truncated_inside(self, rendered: str, start: int, end: int) -> list[int]:
        """The whole rendered text tokenized at once (as the template's own tokenization would); an input
        too long loses the beginning of the text between characters `start` and `end` (the task's own
        text), never the template around it."""
        encoded = self.tokenizer(rendered, add_special_tokens=False, return_offsets_mapping=True)
        ids = encoded["input_ids"]
        excess = len(ids) - self.max_length
        if excess <= 0:
            return ids
        offsets = encoded["offset_mapping"]
        first = next((i for i, (at, _) in enumerate(offsets) if at >= start), len(ids))
        last = next((i for i, (at, _) in enumerate(offsets) if at >= end), len(ids))
        drop = min(excess, max(last - first - 1, 0))
        return ids[:first] + ids[first + drop :]

    def training_features(self, example: Example) -> dict[str, list[int]]:
        source, target = self.prompt_ids(example), self.target_ids(example.target)
        if self.is_seq2seq:
            return {"input_ids": source, "labels": target}
        return {"input_ids": source + target, "labels": [IGNORE_INDEX] * len(source) + target}

    def scoring_features(self, example: Example, target: str) -> dict[str, list[int]]:
        """Like training features, for an arbitrary candidate target (rank classification)."""
        return self.training_features(Example(example.source, target, extra=example.extra))


def _strip_leading_bos(ids: list[int], tokenizer: Any) -> list[int]:
    # BART-style tokenizers start targets with <s>; the model's decoder start token plays that role.
    bos = tokenizer.bos_token_id
    return ids[1:] if bos is not None and ids and ids[0] == bos and len(ids) > 1 else ids


def pad_batch(features: Sequence[dict[str, list[int]]], pad_id: int, side: str = "right") -> dict[str, torch.Tensor]:
    """Pad `input_ids` (with `pad_id`) and `labels` (with -100) and build the attention mask."""
    batch: dict[str, torch.Tensor] = {}
    width = max(len(f["input_ids"]) for f in features)
    batch["input_ids"] = _pad([f["input_ids"] for f in features], width, pad_id, side)
    batch["attention_mask"] = _pad([[1] * len(f["input_ids"]) for f in features], width, 0, side)
    if "labels" in features[0]:
        label_width = max(len(f["labels"]) for f in features)
        batch["labels"] = _pad([f["labels"] for f in features], label_width, IGNORE_INDEX, side)
    return batch


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Each token's position counted from its row's first real token (padding at 0): transformers'
    generate() rule, so that left and right padding, training and cached generation all agree."""
    return (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)


def trailing_label_columns(labels: torch.Tensor) -> int:
    """How many trailing columns of a causal batch a model must give logits for to score every label:
    from the column before the first label (it predicts that label) to the end."""
    columns = (labels != IGNORE_INDEX).any(0).nonzero()
    first = int(columns.min()) if len(columns) else labels.shape[1] - 1
    return labels.shape[1] - first + 1


def _pad(rows: Sequence[list[int]], width: int, value: int, side: str) -> torch.Tensor:
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, row in enumerate(rows):
        if side == "right":
            out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        else:
            out[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
    return out


def is_template_text(value: str) -> bool:
    return "{{" in value or "{%" in value


def chat_template_text(tokenizer: Any, setting: str | None) -> str | None:
    """The Jinja text a `chat_template` setting means: None / "none" -> no template; "auto" -> the
    tokenizer's own (None when it has none); a template file -> its text; template text -> itself (what
    adapters record)."""
    if setting is None or setting == "none":
        return None
    if setting == "auto":
        own = getattr(tokenizer, "chat_template", None)
        if isinstance(own, dict):  # several named templates: the default one
            own = own.get("default")
        return own or None
    if is_template_text(setting):
        return setting
    from pathlib import Path

    path = Path(setting)
    if not path.is_file():
        raise ChatTemplateError(
            f"chat_template {setting!r}: expected auto, none or a Jinja template file (no such file)"
        )
    return path.read_text(encoding="utf-8")


def chat_format(tokenizer: Any, setting: str | None, seq2seq: bool) -> ChatFormat | None:
    template = chat_template_text(tokenizer, setting)
    if template is None:
        return None
    if seq2seq:
        raise ChatTemplateError("chat_template applies to causal models; a seq2seq model reads plain text")
    return ChatFormat.from_template(tokenizer, template)
