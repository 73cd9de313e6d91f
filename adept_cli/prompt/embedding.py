"""The adapted input embedding: the base's embedding plus every adapter's offsets and soft prompt.

Real token ids map to E + offsets, *virtual* ids (>= vocabulary size) to soft-prompt rows: adapter k's
slot j is id vocab_size + start_k + j. Which adapter each row uses, and (DePT) each token's content
position, come from the plan of the call in progress (`rows.installed`); outside any call every row uses
the default adapter and starts with its prompt.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .rows import RowPlan, current_call, record_positions


class AdapterEmbedding(nn.Module):
    """The base's input embedding plus every adapter: E(ids) + each row's offsets, prompt rows at virtual
    ids."""

    def __init__(self, embedding: nn.Module, vocab_size: int):
        super().__init__()
        self.embedding = embedding
        self.vocab_size = vocab_size
        self.adapters = nn.ModuleDict()
        self.starts: dict[str, int] = {}  # first virtual slot of each adapter
        self.default: str | None = None  # the adapter of rows no plan names

    @property
    def weight(self) -> torch.Tensor:
        # HF code reads `get_input_embeddings().weight` (weight tying, dtype and device checks).
        return self.embedding.weight

    def plan(self, names: list[str | None]) -> RowPlan:
        """The plan of rows using `names` (one per row, or one for every row)."""
        lengths = tuple(0 if name is None else self.adapters[name].prompt_len for name in names)
        firsts = tuple(self.vocab_size + (self.starts[name] if name is not None else 0) for name in names)
        return RowPlan(tuple(names), lengths, firsts)

    def uses_positions(self, plan: RowPlan) -> bool:
        return any(name is not None and self.adapters[name].uses_positions for name in set(plan.names))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        call = current_call(self)
        plan = call.plan if call is not None else self.plan([self.default])
        names = plan.names_for(input_ids.shape[0])
        virtual = input_ids >= self.vocab_size
        plain = input_ids.masked_fill(virtual, 0)
        embeds = self.embedding(plain)
        distinct = [name for name in dict.fromkeys(names) if name is not None]
        if not distinct:
            return embeds
        every_row = len(distinct) == 1 and None not in names
        positions = None
        if any(self.adapters[name].uses_positions for name in distinct):
            positions = self._positions(input_ids, plan, call)
        offsets = None if every_row else torch.zeros_like(embeds)
        # each adapter's rows (None: every row is its)
        picked = {
            name: None if every_row else torch.tensor([row == name for row in names], device=input_ids.device)
            for name in distinct
        }
        for name, rows in picked.items():
            adapter = self.adapters[name]
            found = adapter.offsets(
                _pick(plain, rows), _pick(embeds, rows), _pick(positions, rows) if adapter.uses_positions else None
            )
            if found is not None and every_row:
                embeds = embeds + found
            elif found is not None:
                offsets[rows] = found
        if offsets is not None:
            embeds = embeds + offsets
        if not every_row and not bool(virtual.any()):  # every_row: no host sync
            return embeds
        for name, rows in picked.items():
            adapter = self.adapters[name]
            if not adapter.prompt_len:
                continue
            slot = (input_ids - self.vocab_size - self.starts[name]).clamp(0, adapter.prompt_len - 1)
            # F.embedding, not indexing: its CPU backward is deterministic, so reruns match bit for bit.
            prompt = F.embedding(slot, adapter.prompt_rows().to(embeds.dtype))
            mine = virtual if rows is None else virtual & rows.unsqueeze(1)
            embeds = torch.where(mine.unsqueeze(-1), prompt, embeds)
        return embeds

    def _positions(self, input_ids: torch.Tensor, plan: RowPlan, call: Any) -> torch.Tensor:
        n = input_ids.shape[1]
        if call is None or call.positions is None:  # no positions given: every row starts with its prompt
            lengths = plan.lengths_for(input_ids.shape[0], input_ids.device)
            return torch.arange(n, device=input_ids.device).unsqueeze(0) - lengths
        return call.positions[:, -n:]


def _pick(tensor: torch.Tensor | None, rows: torch.Tensor | None) -> torch.Tensor | None:
    return tensor if tensor is None or rows is None else tensor[rows]


def record_positions_hook(owner: nn.Module, args: tuple, kwargs: dict) -> None:
    """A pre-forward hook for the module whose input the embedding embeds (the causal model, or the
    encoder): hands the positions of each forward to the call in progress, when its rows need them. The
    embedding is looked up on the module, so a copy of the model (copy.deepcopy) hooks its own."""
    embedding = owner.get_input_embeddings()
    call = current_call(embedding) if isinstance(embedding, AdapterEmbedding) else None
    if call is not None and embedding.uses_positions(call.plan):
        record_positions(call, kwargs.get("position_ids"), kwargs.get("attention_mask"))
