"""Causal generation a step at a time on adept's own engine: rows that end leave at once, and rows that
arrive join between two steps, so a short answer does not wait for the longest row of its batch.

Why not transformers' continuous batching (`generate_batch` / `init_continuous_batching`): its requests
are token ids packed into one row of a paged cache, with no way to give a request its own model inputs, so
neither a row's adapter (ADePT's offsets on every token, DePT's on every position, a prompt's slots)
nor adept's per-row plan reaches the forward; and its sampling is one draw for the whole batch, where
every adept row draws from a stream of its own (a seeded request answers the same in any company).

So this keeps the rows in one `DynamicCache`, left-padded: joining rows are run through the model on
their own (`AdapterModel.prefill`, their prompts shared as a cache where the model allows) and their
cache is padded on the left to the same width and stacked under the others'; a row that ends is dropped
from the cache, and columns no row needs any more are cut. Each step is one forward of the rows' last
tokens (`AdapterModel.decode_step`) at each row's own position, with its adapter's offsets. Every row
chooses its token as it does in a whole-batch `generate` (greedy, or its sampling from its own stream),
so its answer is the one it gets alone.

Models whose cache is not a plain per-layer one (sliding-window or recurrent layers) and generation
configs that ask transformers for logits processors (a repetition penalty, banned words, ...) run whole
batches instead, as do seq2seq models; the engine says which and why (`stepwise_refused`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from concurrent.futures import InvalidStateError
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import torch

from ..encoding import pad_batch
from ..prompt.rows import left_packed
from .protocol import Job, Sampling

# Generation settings under which `generate` changes a greedy row's scores (and which this loop does not
# reproduce): a config that sets one away from its default runs whole batches.
SCORE_CHANGING_SETTINGS = (
    "repetition_penalty",
    "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size",
    "bad_words_ids",
    "min_length",
    "min_new_tokens",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "suppress_tokens",
    "begin_suppress_tokens",
    "sequence_bias",
    "exponential_decay_length_penalty",
    "renormalize_logits",
    "guidance_scale",
)


def stepwise_refused(engine: Any) -> str | None:
    """Why `engine`'s generation runs whole batches instead of a step at a time (None: it does not)."""
    from transformers import DynamicCache, GenerationConfig
    from transformers.cache_utils import DynamicLayer

    if engine.is_seq2seq:
        return "a seq2seq model's rows run whole batches"
    config, default = engine.model.base.generation_config, GenerationConfig()
    changed = [name for name in SCORE_CHANGING_SETTINGS if getattr(config, name, None) != getattr(default, name, None)]
    if changed:
        return f"the model's generation config sets {', '.join(changed)}, which a step-by-step loop does not apply"
    probe = torch.tensor([[engine.tokenizer.eos_token_id or 0] * 2], device=engine.device)
    try:
        _, cache, _ = engine.model.prefill(probe, torch.ones_like(probe), [None])
    except Exception as error:  # noqa: BLE001 - a model that cannot be driven this way runs whole batches
        return f"the model cannot be run a step at a time ({type(error).__name__}: {str(error)[:120]})"
    if type(cache) is not DynamicCache or any(type(layer) is not DynamicLayer for layer in cache.layers):
        kinds = sorted({type(layer).__name__ for layer in getattr(cache, "layers", [])}) or [type(cache).__name__]
        return f"its cache ({', '.join(kinds)}) is not one adept can split into rows"
    return None


@dataclass
class LiveRow:
    job: Job
    decoder: Any  # engine.RowDecoder
    sampling: Sampling
    generator: torch.Generator | None
    steps: int = 0


class Decoding:
    """The rows being generated now, their cache, and each row's next-token logits."""

    def __init__(self, engine: Any, make_decoder: Callable[[Any], Any]):
        self.engine, self.make_decoder = engine, make_decoder
        self.rows: list[LiveRow] = []
        self.cache: Any = None
        self.mask: torch.Tensor | None = None
        self.logits: torch.Tensor | None = None
        self.holding: Counter[str] = Counter()  # rows per adapter, whose adapters stay in memory

    def __len__(self) -> int:
        return len(self.rows)

    def admissible(self, waiting: list[Job], room: int) -> list[Job]:
        """The first of `waiting` that fit: at most `room` rows, and with the rows here at most
        `--max-resident` adapters (those beyond wait for the next step)."""
        limit, names, chosen = self.engine.residency.limit, set(self.holding), []
        for job in waiting:
            if len(chosen) >= room:
                break
            if job.adapter is None or job.adapter in names or limit is None or len(names) < limit:
                chosen.append(job)
                if job.adapter is not None:
                    names.add(job.adapter)
        return chosen

    def join(self, jobs: list[Job]) -> None:
        """Run `jobs`' rows up to their first token and add them; their adapters are made ready (a job
        whose adapter cannot be fails alone). A prefill that fails as a whole raises, nothing added."""
        new = sorted({job.adapter for job in jobs if job.adapter is not None and job.adapter not in self.holding})
        errors = self.engine.ready(new)  # the others are held (pinned) from now until `_answer` lets go
        for job in jobs:
            if job.adapter in errors:
                job.future.set_exception(errors[job.adapter])
        jobs = [job for job in jobs if job.adapter not in errors]
        held = [name for name in new if name not in errors]
        if not jobs:
            self.engine.release(held)
            return
        try:
            rows = [{"input_ids": job.generation.input_ids} for job in jobs]
            padded = pad_batch(rows, self.engine.tokenizer.pad_token_id)
            ids, mask = left_packed(padded["input_ids"], padded["attention_mask"])
            device, names = self.engine.device, [job.adapter for job in jobs]
            logits, cache, mask = self.engine.model.prefill(ids.to(device), mask.to(device), names)
        except Exception:
            self.engine.release(held)
            raise
        self.holding.update(job.adapter for job in jobs if job.adapter is not None)
        self._stack(logits, cache, mask)
        for job in jobs:
            sampling = job.sampling or Sampling()
            generator = sampling.stream(job.generation.private_seed, self.engine.device)
            self.rows.append(LiveRow(job, self.make_decoder(job.generation), sampling, generator))

    def step(self) -> int:
        """Each row's next token; rows that end leave (their futures answered); one forward for the rest.
        Returns the tokens generated. A forward that fails as a whole raises (the caller runs the rows
        still open again, from their start)."""
        keep, tokens, generated = [], [], 0
        greedy = self.logits.argmax(-1).tolist()  # every row's greedy choice in one call
        for index, live in enumerate(self.rows):
            plain = live.sampling.greedy and live.steps >= live.sampling.min_tokens
            token = greedy[index] if plain else self._choose(live, self.logits[index])
            if token is not None:
                live.decoder.push(token)
                live.steps += 1
                generated += 1
            if live.decoder.finished:
                self._answer(live)
            else:
                keep.append(index)
                tokens.append(token)
        if len(keep) < len(self.rows):
            self._keep(keep)
        if self.rows:
            self.mask = torch.cat([self.mask, self.mask.new_ones((len(self.rows), 1))], dim=1)
            step = torch.tensor(tokens, device=self.mask.device).unsqueeze(1)
            names = [live.job.adapter for live in self.rows]
            self.logits = self.engine.model.decode_step(step, names, self.mask, self.cache)
        return generated

    def take_all(self) -> list[Job]:
        """Every row's job, the session emptied (after a failed forward: the caller runs them again)."""
        jobs = [live.job for live in self.rows]
        self.engine.release(list(self.holding))
        self.rows, self.cache, self.mask, self.logits, self.holding = [], None, None, None, Counter()
        return jobs

    # -- one row's token --------------------------------------------------------------------------------

    def _choose(self, live: LiveRow, logits: torch.Tensor) -> int | None:
        """The row's next token as a whole-batch `generate` chooses it (`engine._RowSampling`); None when
        its sampling failed (the row then ends, alone)."""
        try:
            return live.sampling.next_token(logits, live.steps, sorted(self.engine.end_ids), live.generator)
        except Exception as error:  # noqa: BLE001 - e.g. logits that are not numbers: this row only
            live.decoder.fail(error)
            return None

    def _answer(self, live: LiveRow) -> None:
        try:
            result, error = live.decoder.close(), None
        except Exception as failure:  # noqa: BLE001 - the row's own failure (its sampling, its client)
            result, error = None, failure
        with suppress(InvalidStateError):  # answered already: a shutdown past its deadline failed it
            if error is None:
                live.job.future.set_result(result)
            else:
                live.job.future.set_exception(error)
        if live.job.adapter is not None:
            self.holding[live.job.adapter] -= 1
            if not self.holding[live.job.adapter]:
                del self.holding[live.job.adapter]
                self.engine.release([live.job.adapter])

    # -- the cache's rows -----------------------------------------------------------------------------

    def _stack(self, logits: torch.Tensor, cache: Any, mask: torch.Tensor) -> None:
        if self.cache is None:
            self.logits, self.cache, self.mask = logits, cache, mask
            return
        width = max(self.mask.shape[1], mask.shape[1])
        self.mask = torch.cat([_pad_left(self.mask, width), _pad_left(mask, width)])
        for ours, theirs in zip(self.cache.layers, cache.layers):
            ours.keys = torch.cat([_pad_left(ours.keys, width, -2), _pad_left(theirs.keys, width, -2)])
            ours.values = torch.cat([_pad_left(ours.values, width, -2), _pad_left(theirs.values, width, -2)])
        self.logits = torch.cat([self.logits, logits])

    def _keep(self, keep: list[int]) -> None:
        self.rows = [self.rows[index] for index in keep]
        if not keep:
            self.cache = self.mask = self.logits = None
            return
        index = torch.tensor(keep, device=self.mask.device)
        mask = self.mask[index]
        start = int(mask.any(0).long().argmax())  # columns no row attends to any more go
        self.mask, self.logits = mask[:, start:], self.logits[index]
        for layer in self.cache.layers:
            layer.keys, layer.values = layer.keys[index, :, start:], layer.values[index, :, start:]


def _pad_left(tensor: torch.Tensor, width: int, dim: int = 1) -> torch.Tensor:
    missing = width - tensor.shape[dim]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)
