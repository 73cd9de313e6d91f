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

from .tasks.spec import Example

IGNORE_INDEX = -100


@dataclass
class Encoder:
    tokenizer: Any
    is_seq2seq: bool
    max_length: int = 256
    max_target_length: int = 128

    def __post_init__(self) -> None:
        self.tokenizer.truncation_side = "left"

    def source_ids(self, text: str) -> list[int]:
        return self.tokenizer(text, truncation=True, max_length=self.max_length)["input_ids"]

    def target_ids(self, text: str) -> list[int]:
        """The tokens the model should produce for `text`, end token included."""
        if self.is_seq2seq:
            ids = self.tokenizer(text_target=text, truncation=True, max_length=self.max_target_length)["input_ids"]
            return _strip_leading_bos(ids, self.tokenizer)
        ids = self.tokenizer(" " + text, add_special_tokens=False)["input_ids"][: self.max_target_length - 1]
        return ids + [self.tokenizer.eos_token_id]

    def training_features(self, example: Example) -> dict[str, list[int]]:
        source, target = self.source_ids(example.source), self.target_ids(example.target)
        if self.is_seq2seq:
            return {"input_ids": source, "labels": target}
        return {"input_ids": source + target, "labels": [IGNORE_INDEX] * len(source) + target}

    def scoring_features(self, example: Example, target: str) -> dict[str, list[int]]:
        """Like training features, for an arbitrary candidate target (rank classification)."""
        return self.training_features(Example(example.source, target))


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


def _pad(rows: Sequence[list[int]], width: int, value: int, side: str) -> torch.Tensor:
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, row in enumerate(rows):
        if side == "right":
            out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        else:
            out[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
    return out
