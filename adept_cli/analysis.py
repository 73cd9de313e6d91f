"""The paper's analyses as functions: the position-shift probe (Table 1) and offset statistics (Table 2)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .encoding import Encoder
from .errors import AdeptError
from .evaluation import evaluate
from .prompt.model import PromptTunedModel
from .tasks.example import Example
from .tasks.spec import Task

DEFAULT_SHIFTS = (0, 50, 100, 150, 200)


class AnalysisError(AdeptError, ValueError):
    """The analysis does not apply to this model or these settings."""


# -- offsets as the model applies them ----------------------------------------------------------------


def applied_offsets(model: PromptTunedModel, ids: torch.Tensor) -> torch.Tensor:
    """The offset the model adds to each token of `ids` (1 x n) in a real forward pass (the embedding's
    output for the real tokens, whether the prompt runs in the row or is shared, minus E)."""
    captured: list[torch.Tensor] = []

    def grab(module: Any, args: Any, output: torch.Tensor) -> None:
        real = args[0] < model.vocab_size  # prompt slots are virtual ids
        if int(real.sum()) == ids.numel():
            captured.append(output[real].view(*ids.shape, -1))

    handle = model.adapted_embedding.register_forward_hook(grab)
    try:
        with torch.no_grad():
            extra = {"decoder_input_ids": torch.zeros_like(ids[:, :1])} if model.is_seq2seq else {}
            model(ids, **extra)
    finally:
        handle.remove()
    return captured[-1] - model.adapted_embedding.embedding(ids)


# -- shift probe -----------------------------------------------------------------------------------


class ShiftedEncoder(Encoder):
    """Inserts `shift` filler tokens before each input's content (after a leading BOS), moving every
    original token `shift` positions to the right."""

    def __init__(self, base: Encoder, filler_id: int, shift: int):
        super().__init__(base.tokenizer, base.is_seq2seq, base.max_length, base.max_target_length, base.chat)
        self.filler_id, self.shift = filler_id, shift

    def source_ids(self, text: str) -> list[int]:
        return insert_filler(super().source_ids(text), self.filler_id, self.shift, self.tokenizer.bos_token_id)


def insert_filler(ids: list[int], filler_id: int, count: int, bos_id: int | None) -> list[int]:
    keep = 1 if bos_id is not None and ids and ids[0] == bos_id else 0
    return ids[:keep] + [filler_id] * count + ids[keep:]


@dataclass
class ShiftRow:
    shift: int
    metric: float
    change: float  # metric minus the metric at shift 0
    max_offset_change: float | None  # largest |offset difference| of the original tokens (None for PT)


@dataclass
class ShiftProbe:
    method: str
    task: str
    split: str
    metric: str
    mode: str  # "cyclic offset shift" (DePT) or "input shift" (ADePT, PT)
    filler: str | None
    examples: int
    rows: list[ShiftRow] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {**{k: v for k, v in self.__dict__.items() if k != "rows"}, "rows": [r.__dict__ for r in self.rows]}


def shift_probe(
    model: PromptTunedModel,
    encoder: Encoder,
    task: Task,
    examples: Sequence[Example],
    shifts: Sequence[int] = DEFAULT_SHIFTS,
    scoring: str = "generate",
    batch_size: int = 32,
    filler_id: int | None = None,
    offset_examples: int = 16,
    split: str = "test",
) -> ShiftProbe:
    """Table 1 of the paper: the metric when the positions move.

    DePT: its position offsets are rolled by each shift (the input stays). ADePT and PT: `shift` filler
    tokens are inserted before the content, and for ADePT the offsets of the original tokens are compared
    (they should not move at all).
    """
    if not isinstance(model, PromptTunedModel):
        raise AnalysisError("the shift probe applies to prompt-method runs (pt, dept, adept)")
    if any(s < 0 for s in shifts) or 0 not in shifts:
        raise AnalysisError(f"--shifts must be non-negative and include 0; got {list(shifts)}")
    adapter, method = model.adapter, model.adapter.method
    follows = method.offsets_follow
    if follows == "positions" and max(shifts) >= method.position_count(adapter):
        raise AnalysisError(
            f"{method.name} has s = {method.position_count(adapter)} positions; shifts must be below it"
        )
    tokenizer = encoder.tokenizer
    if filler_id is None:
        filler_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    probe_ids = [torch.tensor([encoder.prompt_ids(e)]) for e in examples[:offset_examples]]
    reference = [applied_offsets(model, ids) for ids in probe_ids] if follows is not None else []

    result = ShiftProbe(
        method=method.name,
        task=task.name,
        split=split,
        metric=task.main_metric,
        mode="cyclic offset shift" if follows == "positions" else "input shift",
        filler=None if follows == "positions" else tokenizer.convert_ids_to_tokens(filler_id),
        examples=len(examples),
    )
    for shift in sorted(shifts):
        if follows == "positions":
            with method.rolled_positions(adapter, shift):
                metric = evaluate(model, encoder, task, examples, scoring, batch_size).main
                moved = [applied_offsets(model, ids) for ids in probe_ids]
            change = max(float((a - b).abs().max()) for a, b in zip(moved, reference)) if reference else None
        else:
            shifted = ShiftedEncoder(encoder, filler_id, shift)
            metric = evaluate(model, shifted, task, examples, scoring, batch_size).main
            change = None
            if follows == "tokens":
                change = max(
                    float(
                        (_original_token_offsets(model, ids, filler_id, shift, tokenizer.bos_token_id) - ref)
                        .abs()
                        .max()
                    )
                    for ids, ref in zip(probe_ids, reference)
                )
        base = result.rows[0].metric if result.rows else metric
        result.rows.append(ShiftRow(shift, metric, metric - base, change))
    return result


def _original_token_offsets(model: PromptTunedModel, ids: torch.Tensor, filler: int, shift: int, bos: int | None):
    shifted = torch.tensor([insert_filler(ids[0].tolist(), filler, shift, bos)])
    offsets = applied_offsets(model, shifted)
    keep = 1 if bos is not None and ids[0, 0].item() == bos else 0
    return torch.cat([offsets[:, :keep], offsets[:, keep + shift :]], dim=1)


# -- offset statistics -----------------------------------------------------------------------------


@dataclass
class OffsetStats:
    method: str
    tokens: int
    embedding_abs_mean: float
    embedding_abs_var: float
    offset_abs_mean: float | None
    offset_abs_var: float | None
    distinct_offsets: int | None  # ADePT: one per distinct token; DePT: one per position seen
    largest: list[dict[str, Any]] = field(default_factory=list)
    # With norms=True: the L2 norm of every token's input embedding and of its offset (a figure's data).
    embedding_norms: list[float] | None = None
    offset_norms: list[float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items() if not key.endswith("_norms")}


class _Moments:
    """Running mean and variance of |x| over many tensors (float64)."""

    def __init__(self) -> None:
        self.count, self.total, self.squares = 0, 0.0, 0.0

    def add(self, values: torch.Tensor) -> None:
        values = values.abs().double()
        self.count += values.numel()
        self.total += float(values.sum())
        self.squares += float((values * values).sum())

    def mean(self) -> float:
        return self.total / max(self.count, 1)

    def var(self) -> float:
        return max(self.squares / max(self.count, 1) - self.mean() ** 2, 0.0)


def offset_statistics(
    model: PromptTunedModel, encoder: Encoder, examples: Sequence[Example], top: int = 10, norms: bool = False
) -> OffsetStats:
    """Table 2 of the paper: mean and variance of |input embedding| and |offset| over every token the
    model embeds for `examples` (the input, plus the target for causal models); with `norms`, also every
    token's embedding and offset L2 norms."""
    if not isinstance(model, PromptTunedModel):
        raise AnalysisError("offset statistics apply to prompt-method runs (pt, dept, adept)")
    adapter = model.adapter
    embedding = model.adapted_embedding.embedding
    follows = adapter.method.offsets_follow
    embeds, offsets = _Moments(), _Moments()
    token_counts: dict[int, int] = {}
    positions_seen: set[int] = set()
    embedding_norms: list[float] = []
    offset_norms: list[float] = []
    with torch.no_grad():
        for example in examples:
            ids = encoder.training_features(example)["input_ids"]
            tensor = torch.tensor([ids], device=embedding.weight.device)
            e = embedding(tensor)
            embeds.add(e)
            if norms:
                embedding_norms += e[0].norm(dim=-1).tolist()
            for token in ids:
                token_counts[token] = token_counts.get(token, 0) + 1
            if follows is not None:
                positions = torch.arange(len(ids), device=tensor.device).unsqueeze(0)
                positions_seen.update(range(min(len(ids), adapter.method.position_count(adapter))))
                found = adapter.offsets(tensor, e, positions)
                offsets.add(found)
                if norms:
                    offset_norms += found[0].norm(dim=-1).tolist()
    largest: list[dict[str, Any]] = []
    distinct = None
    if follows == "tokens":
        distinct = len(token_counts)
        ids = torch.tensor(sorted(token_counts), device=embedding.weight.device)
        with torch.no_grad():
            token_norms = adapter.offsets(ids, embedding(ids), None).norm(dim=-1)
        order = token_norms.argsort(descending=True)[:top].tolist()
        tokens = encoder.tokenizer.convert_ids_to_tokens(ids[order].tolist())
        largest = [
            {"token": token, "id": int(ids[i]), "norm": float(token_norms[i]), "count": token_counts[int(ids[i])]}
            for token, i in zip(tokens, order)
        ]
    elif follows == "positions":
        distinct = len(positions_seen)
    return OffsetStats(
        method=adapter.method.name,
        tokens=embeds.count // max(model.dim, 1),
        embedding_abs_mean=embeds.mean(),
        embedding_abs_var=embeds.var(),
        offset_abs_mean=offsets.mean() if follows is not None else None,
        offset_abs_var=offsets.var() if follows is not None else None,
        distinct_offsets=distinct,
        largest=largest,
        embedding_norms=embedding_norms if norms else None,
        offset_norms=offset_norms if norms and follows is not None else None,
    )
