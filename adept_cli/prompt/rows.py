"""What one call through the adapter model does to each row, and the tensor functions that lay it out.

`RowPlan` is built once per `forward` / `generate` call: each row's adapter (or none), its prompt length
and first virtual slot. The model hands it down as an argument where the call chain is adept's own; where
transformers' forward sits between the model and its adapted embedding, `installed` makes it the plan of
that call (a context variable: a call in another thread or an asyncio task never sees it) and takes it
away when the call ends, even on error. Nothing of one call is visible to the next.

The layout of prompted rows (`with_prompts`): each row's slots go right before its first attended token;
where prompt lengths differ, the shorter ones are padded on the far side (the left of a causal row, the
right of an encoder row) so every row's content ends where it did, and columns that are padding in every
row are dropped. A batch of one prompt length is the special case with nothing to pad (its layout
has no data-dependent shape: the memory planner runs it on fake tensors).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import torch

from ..encoding import IGNORE_INDEX
from ..errors import AdeptError


@dataclass(frozen=True)
class RowPlan:
    """Which adapter each row of one call uses. `names` has one entry per row, or a single entry that
    every row uses whatever the batch becomes (beams and returned sequences of a one-adapter batch)."""

    names: tuple[str | None, ...]
    prompt_lengths: tuple[int, ...]
    first_slots: tuple[int, ...]  # the virtual id of each row's first prompt slot

    @property
    def uniform(self) -> bool:
        return len(set(self.names)) == 1

    @property
    def longest_prompt(self) -> int:
        return max(self.prompt_lengths, default=0)

    def names_for(self, batch: int) -> list[str | None]:
        if self.uniform:
            return [self.names[0]] * batch
        if len(self.names) != batch:
            raise AdeptError(
                "a mixed-adapter batch needs one adapter name per row and one sequence per row "
                "(no beam search or several returned sequences)"
            )
        return list(self.names)

    def lengths_for(self, batch: int, device: torch.device) -> torch.Tensor:
        """Each row's prompt length as a (batch, 1) tensor."""
        return self._column(self.prompt_lengths, batch, device)

    def first_slots_for(self, batch: int, device: torch.device) -> torch.Tensor:
        """Each row's first virtual slot as a (batch, 1) tensor."""
        return self._column(self.first_slots, batch, device)

    def _column(self, values: tuple[int, ...], batch: int, device: torch.device) -> torch.Tensor:
        values = (values[0],) * batch if self.uniform else values
        return torch.tensor(values, device=device).unsqueeze(1)


@dataclass
class Call:
    """The plan of the call in progress and, for methods whose offsets follow positions, the positions
    transformers gave the forward now running inside it (each decoding step has its own)."""

    plan: RowPlan
    positions: torch.Tensor | None = field(default=None)


_CALLS: ContextVar[dict[int, Call] | None] = ContextVar("adept_calls", default=None)  # copied on write


@contextmanager
def installed(owner: Any, plan: RowPlan) -> Iterator[Call]:
    """`plan` is the plan of every forward of `owner` (an adapted embedding) inside this block."""
    call = Call(plan)
    token = _CALLS.set({**(_CALLS.get() or {}), id(owner): call})
    try:
        yield call
    finally:
        _CALLS.reset(token)


def current_call(owner: Any) -> Call | None:
    return (_CALLS.get() or {}).get(id(owner))


def record_positions(call: Call, position_ids: Any, attention_mask: Any) -> None:
    """Keep the positions of the forward starting now in `call` (from `position_ids`, else a 2-D
    attention mask), as content positions: counted from each row's first content token."""
    if isinstance(position_ids, torch.Tensor) and position_ids.ndim == 2:
        positions = position_ids
    elif isinstance(attention_mask, torch.Tensor) and attention_mask.ndim == 2:
        positions = attention_mask.long().cumsum(-1) - 1
    else:
        call.positions = None
        return
    call.positions = positions - call.plan.lengths_for(positions.shape[0], positions.device)


def with_prompts(
    plan: RowPlan,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    labels: torch.Tensor | None,
    seq2seq: bool,
) -> dict[str, torch.Tensor]:
    """Every row with its adapter's prompt slots before its first attended token (see the module
    docstring). Returns `input_ids`, `attention_mask`, `labels` (prompt slots -100; only when given) and
    `content_index`, the column of each original column in the new rows. Works for right- and left-padded
    rows alike."""
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    batch, n = input_ids.shape
    device = input_ids.device
    length = plan.lengths_for(batch, device)
    first_slot = plan.first_slots_for(batch, device)
    longest = plan.longest_prompt
    lead = (attention_mask.cumsum(1) == 0).sum(1, keepdim=True)  # leading pads per row
    shift = torch.zeros_like(length) if seq2seq else longest - length  # extra pads before a causal row
    column = torch.arange(n + longest, device=device).unsqueeze(0) - shift  # in the row's own layout
    slot = column - lead
    in_prompt = (slot >= 0) & (slot < length)
    outside = (column < 0) | (column >= n + length)  # the pads of rows with shorter prompts
    source = torch.where(column < lead, column, column - length).clamp(0, n - 1)

    def place(tensor: torch.Tensor, prompt_value: torch.Tensor | int, pad_value: int) -> torch.Tensor:
        placed = torch.where(in_prompt, prompt_value, tensor.gather(1, source.expand(batch, -1)))
        return placed.masked_fill(outside, pad_value) if longest else placed

    original = torch.arange(n, device=device).unsqueeze(0)
    out = {
        "input_ids": place(input_ids, first_slot + slot.clamp(0, max(longest - 1, 0)), 0),
        "attention_mask": place(attention_mask, 1, 0),
        "content_index": torch.where(original < lead, original, original + length) + shift,
    }
    if labels is not None:
        out["labels"] = place(labels, IGNORE_INDEX, IGNORE_INDEX)
    if len(set(plan.prompt_lengths)) == 1:  # nothing padded for a shorter prompt (and no host sync)
        return out
    return _without_empty_columns(out, seq2seq)


def _without_empty_columns(rows: dict[str, torch.Tensor], seq2seq: bool) -> dict[str, torch.Tensor]:
    """Drop the columns that are padding in every row on the side the shorter prompts were padded."""
    mask = rows["attention_mask"]
    real = mask.bool().any(0)
    if seq2seq:
        keep = int(real.nonzero().max()) + 1 if real.any() else mask.shape[1]
        if keep == mask.shape[1]:
            return rows
        return {k: v if k == "content_index" else v[:, :keep] for k, v in rows.items()}
    drop = int(real.nonzero().min()) if real.any() else 0
    if drop == 0:
        return rows
    trimmed = {k: v if k == "content_index" else v[:, drop:] for k, v in rows.items()}
    # a padding column dropped here maps to the first kept column (the logits of padding are not defined)
    trimmed["content_index"] = (rows["content_index"] - drop).clamp(min=0)
    return trimmed


def content_positions(attention_mask: torch.Tensor, prompt_len: int | torch.Tensor) -> torch.Tensor:
    """The positions the content tokens have behind an l-token prompt: l, l + 1, ... (pads 0, masked)."""
    return (attention_mask.long().cumsum(-1) - 1 + prompt_len).masked_fill(attention_mask == 0, 0)


def content_logits(logits: torch.Tensor, content_index: torch.Tensor) -> torch.Tensor:
    """The logits of each original column (the prompt's columns left out)."""
    start = content_index[:, :1]
    n = content_index.shape[1]
    steps = torch.arange(n, device=content_index.device).unsqueeze(0)
    if bool((start == start[0]).all()) and bool((content_index == start + steps).all()):
        return logits[:, int(start[0, 0]) : int(start[0, 0]) + n]  # every row alike: a view
    index = content_index.unsqueeze(-1).expand(-1, -1, logits.shape[-1])
    return logits.gather(1, index)


def left_packed(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The same rows with their padding moved to the left (generation continues every row at the end)."""
    real = attention_mask.bool()
    order = torch.argsort(real.long(), dim=1, stable=True)  # pads first, tokens in their order after
    return input_ids.gather(1, order), attention_mask.gather(1, order)


def given_then_new(output: Any, given_ids: torch.Tensor, prompted_width: int) -> torch.Tensor:
    """A causal generate's sequences without the prompt slots: the ids as the caller gave them, then the
    new tokens (several rows per given row when generate returned several sequences each)."""
    sequences = output if isinstance(output, torch.Tensor) else output.sequences
    per_row = sequences.shape[0] // given_ids.shape[0]
    return torch.cat([given_ids.repeat_interleave(per_row, dim=0), sequences[:, prompted_width:]], dim=1)


def sequences_per_row(kwargs: dict, generation_config: Any) -> int:
    """How many sequences `generate` runs for each given row (beams, or returned sequences)."""
    config = kwargs.get("generation_config") or generation_config
    beams = kwargs.get("num_beams", getattr(config, "num_beams", 1) or 1)
    returned = kwargs.get("num_return_sequences", getattr(config, "num_return_sequences", 1) or 1)
    return max(beams, returned)
