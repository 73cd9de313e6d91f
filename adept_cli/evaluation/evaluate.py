"""Predictions and metrics for a task split: generation + string match, or rank classification.

- ``generate``: greedy decoding, then the task's scoring (label words matched after normalisation,
  numbers parsed, answers compared, code executed), as the paper.
- ``rank``: classification tasks only: the label word whose tokens (and end token) the model finds
  most likely wins; no output can be invalid.

Under several processes each evaluates its own slice of the examples with the unwrapped model and the
results are gathered by example index, so every example counts exactly once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from ..encoding import IGNORE_INDEX, Encoder, pad_batch, positions_from_mask, trailing_label_columns
from ..hf import called_model, forward_parameters
from ..tasks.example import Example
from ..tasks.spec import Task, TaskError
from .metrics import score

Scoring = Literal["generate", "rank"]
NEW_TOKENS = {"regression": 8, "text": 48, "code": 384}


@dataclass
class EvalResult:
    metrics: dict[str, float]
    outputs: list[Any]  # generated text, or class index (rank)
    count: int
    scoring: str

    @property
    def main(self) -> float:
        return next(iter(self.metrics.values()))


def max_new_tokens(task: Task, encoder: Encoder) -> int:
    if task.kind == "classification":
        return max(len(encoder.target_ids(word)) for word in task.label_words) + 1
    return NEW_TOKENS[task.kind]


def _batches(indices: Sequence[int], size: int) -> list[list[int]]:
    return [list(indices[i : i + size]) for i in range(0, len(indices), size)]


def _by_length(examples: Sequence[Example], indices: Sequence[int]) -> list[int]:
    # Longest first: similar lengths share a batch (less padding) and memory peaks at the start.
    return sorted(indices, key=lambda i: -len(examples[i].source))


@torch.no_grad()
def generate_outputs(
    model: Any,
    encoder: Encoder,
    examples: Sequence[Example],
    indices: Sequence[int],
    batch_size: int,
    new_tokens: int,
) -> dict[int, str]:
    tokenizer = encoder.tokenizer
    side = "right" if encoder.is_seq2seq else "left"
    device = next(model.parameters()).device
    outputs: dict[int, str] = {}
    for batch_indices in _batches(_by_length(examples, indices), batch_size):
        features = [{"input_ids": encoder.prompt_ids(examples[i])} for i in batch_indices]
        batch = pad_batch(features, tokenizer.pad_token_id, side=side)
        generated = model.generate(
            input_ids=batch["input_ids"].to(device),
            attention_mask=batch["attention_mask"].to(device),
            max_new_tokens=new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        if not encoder.is_seq2seq:
            generated = generated[:, batch["input_ids"].shape[1] :]
        texts = tokenizer.batch_decode(generated, skip_special_tokens=True)
        outputs.update(zip(batch_indices, texts))
    return outputs


@torch.no_grad()
def label_scores(
    model: Any,
    encoder: Encoder,
    examples: Sequence[Example],
    indices: Sequence[int],
    batch_size: int,
    candidates: Sequence[str],
) -> dict[int, list[float]]:
    """For each example, the log-probability the model gives each candidate target (its tokens and end token)."""
    tokenizer = encoder.tokenizer
    device = next(model.parameters()).device
    outputs: dict[int, list[float]] = {}
    for batch_indices in _batches(_by_length(examples, indices), batch_size):
        scores = []
        for candidate in candidates:
            features = [encoder.scoring_features(examples[i], candidate) for i in batch_indices]
            batch = {k: v.to(device) for k, v in pad_batch(features, tokenizer.pad_token_id).items()}
            scores.append(sequence_log_prob(model, batch, encoder.is_seq2seq))
        outputs.update(zip(batch_indices, torch.stack(scores, dim=1).tolist()))
    return outputs


def rank_outputs(
    model: Any,
    encoder: Encoder,
    examples: Sequence[Example],
    indices: Sequence[int],
    batch_size: int,
    candidates: Sequence[str],
) -> dict[int, int]:
    """The most likely candidate of each example (the first of equal ones)."""
    scores = label_scores(model, encoder, examples, indices, batch_size, candidates)
    return {index: max(range(len(row)), key=row.__getitem__) for index, row in scores.items()}


def sequence_log_prob(model: Any, batch: dict[str, torch.Tensor], is_seq2seq: bool) -> torch.Tensor:
    """Sum of log-probabilities of the label tokens of each row."""
    return sequence_scores(model, batch, is_seq2seq)[0]


def sequence_scores(model: Any, batch: dict[str, torch.Tensor], is_seq2seq: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: the sum of log-probabilities of the label tokens, and whether greedy decoding would
    produce every one of them."""
    labels = batch["labels"]
    # A causal model needs no labels to give logits, and without them it computes no loss and may share
    # the prompt (the first label is predicted from the prompt's last position); seq2seq decoders take
    # their inputs from the labels.
    inputs = batch if is_seq2seq else {key: value for key, value in batch.items() if key != "labels"}
    parameters = forward_parameters(model)
    if not is_seq2seq and "logits_to_keep" in parameters:
        # The output projection for the label columns only: a vocabulary's worth of logits at every
        # position of every row was most of the memory and time of scoring.
        inputs, labels = _rows_at_the_end(model, parameters, inputs, labels)
        keep = trailing_label_columns(labels)
        inputs["logits_to_keep"], labels = keep, labels[:, -keep:]
    logits = model(**inputs).logits
    if not is_seq2seq:  # position t predicts token t + 1
        logits, labels = logits[:, :-1], labels[:, 1:]
    mask = labels != IGNORE_INDEX
    picked = logits[mask].float()  # only label positions: (tokens, vocab)
    wanted = labels[mask]
    token_log_probs = picked.log_softmax(-1).gather(1, wanted.unsqueeze(1)).squeeze(1)
    rows = torch.arange(labels.shape[0], device=labels.device).unsqueeze(1).expand_as(labels)[mask]
    log_probs = torch.zeros(labels.shape[0], device=labels.device).index_add(0, rows, token_log_probs)
    misses = torch.zeros(labels.shape[0], device=labels.device).index_add(
        0, rows, (picked.argmax(-1) != wanted).float()
    )
    return log_probs, misses == 0


def _rows_at_the_end(
    model: Any, parameters: set[str], inputs: dict[str, torch.Tensor], labels: torch.Tensor
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """A right-padded causal batch with each row moved to its end (left padding), so that every row's
    labels lie in the same few trailing columns; positions still count from each row's first token (adept's
    adapter models count them from the mask; a plain model is given them). Unchanged where the model
    cannot be given positions (`parameters`: its forward's), or the batch is not right-padded."""
    mask = inputs.get("attention_mask")
    plain = not getattr(called_model(model), "counts_positions_from_mask", False)
    if mask is None or not bool(mask[:, 0].all()) or (plain and "position_ids" not in parameters):
        return inputs, labels
    width = mask.shape[1]
    columns = torch.arange(width, device=mask.device)
    index = (columns - (width - mask.sum(1, keepdim=True))) % width  # row r's token j lands at j + its padding
    moved = {key: value.gather(1, index) for key, value in inputs.items()}
    if plain:
        moved["position_ids"] = positions_from_mask(moved["attention_mask"])
    return moved, labels.gather(1, index)


def evaluate(
    model: Any,
    encoder: Encoder,
    task: Task,
    examples: Sequence[Example],
    scoring: Scoring = "generate",
    batch_size: int = 16,
    accelerator: Any = None,
    allow_unsafe_exec: bool = False,
) -> EvalResult:
    """Metrics of `model` on `examples`; `accelerator` shards the work over processes. Generated code
    (code tasks) runs isolated; `allow_unsafe_exec` permits running it unisolated where no isolation works."""
    if scoring == "rank" and task.kind != "classification":
        raise TaskError(f"rank classification needs label words; {task.name} is a {task.kind} task (use generate)")
    if accelerator is not None:
        model = accelerator.unwrap_model(model)
    was_training = model.training
    model.eval()
    all_indices = list(range(len(examples)))
    try:
        if accelerator is not None and accelerator.num_processes > 1:
            with accelerator.split_between_processes(all_indices) as mine:
                local = _predict(model, encoder, task, examples, mine, scoring, batch_size)
            from accelerate.utils import gather_object

            pairs = gather_object(sorted(local.items()))
            outputs_by_index = dict(pairs)
        else:
            outputs_by_index = _predict(model, encoder, task, examples, all_indices, scoring, batch_size)
    finally:
        model.train(was_training)
    if sorted(outputs_by_index) != all_indices:
        raise RuntimeError(f"evaluation produced {len(outputs_by_index)} outputs for {len(examples)} examples")
    outputs = [outputs_by_index[i] for i in all_indices]
    metrics = score(task, examples, outputs, allow_unsafe_exec=allow_unsafe_exec)
    return EvalResult(metrics, outputs, len(outputs), scoring)


def _predict(
    model: Any,
    encoder: Encoder,
    task: Task,
    examples: Sequence[Example],
    indices: Sequence[int],
    scoring: Scoring,
    batch_size: int,
) -> dict[int, Any]:
    if scoring == "rank":
        return rank_outputs(model, encoder, examples, indices, batch_size, task.label_words)
    return generate_outputs(model, encoder, examples, indices, batch_size, max_new_tokens(task, encoder))


def write_predictions(path: str | Path, examples: Sequence[Example], result: EvalResult) -> None:
    """One JSON line per example: its index, input, target, the model's output (and label)."""
    import json

    from ..files import write_text_atomic

    lines = []
    for index, (example, output) in enumerate(zip(examples, result.outputs)):
        row = {"index": index, "source": example.source, "target": example.target, "output": output}
        if example.label is not None:
            row["label"] = example.label
        lines.append(json.dumps(row, ensure_ascii=False))
    write_text_atomic(path, "\n".join(lines) + "\n")
