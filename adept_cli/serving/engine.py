"""The model side of `adept serve`: one frozen base with named prompt adapters, and the two kinds of
batched work a server does over them: rank-scoring label words (`/v1/predict` on a classification task)
and generation (completions, and `/v1/predict` on other tasks).

Rows of different adapters share one forward pass (`MixedAdapterModel`): scoring flattens every
(row, label word) pair into one batch, so adapters of different tasks, with different label words, mix
too. Generation of a causal model runs a step at a time (`decoding.Decoding`, driven by the batcher:
rows leave as they end and join between steps); otherwise one `generate` call per batch (`generate`
here). Either way each row stops on its own (end token, its stop strings, its max_tokens, or its client
going away) and its text is decoded as it grows (`RowDecoder`), so a streamed answer and a whole one are
the same text.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

import torch

from ..encoding import pad_batch
from ..evaluation.evaluate import sequence_log_prob
from ..prompt.adapter_files import AdapterSource, BaseFacts
from ..prompt.model import MixedAdapterModel
from ..tasks.example import Example
from .batcher import Batcher
from .catalog import AdapterCatalog
from .decoding import stepwise_refused
from .protocol import Generated, GenerationRow, Job, RowsFailed, Sampling
from .residency import available_memory

SCORE_CHUNK_ON_CPU = 8  # (row, label word) pairs per forward pass on a CPU (see Engine.score_chunk)


class RowDecoder:
    """One row's generated tokens -> text: stops at the end token, a stop string or max_tokens, and hands
    out text only once it is final (not an unfinished UTF-8 character, not a possible start of a stop
    string)."""

    def __init__(self, decode: Callable[[list[int]], str], row: GenerationRow, end_ids: set[int]):
        self.decode, self.row, self.end_ids = decode, row, end_ids
        self.tokens: list[int] = []
        self.text = ""  # final so far
        self.finish_reason: str | None = None
        self.error: BaseException | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def fail(self, error: BaseException) -> None:
        """This row failed on its own: it takes no more tokens; the rows beside it go on."""
        if self.error is None:
            self.error, self.finish_reason = error, "error"

    def push(self, token: int) -> None:
        if self.finished:
            return
        if self.row.cancelled():
            self.finish_reason = "cancelled"
            return
        if token in self.end_ids:
            self._finish("stop", self._decoded())
            return
        self.tokens.append(token)
        decoded = self._decoded()
        cut = min((i for i in (decoded.find(stop) for stop in self.row.stop if stop) if i >= 0), default=-1)
        if cut >= 0:
            self._finish("stop", decoded[:cut])
        elif len(self.tokens) >= self.row.max_tokens:
            self._finish("length", decoded)
        else:
            self._hand_out(decoded[: self._final_length(decoded)])

    def close(self) -> Generated:
        """The row's result once generation has ended (a row still open ran out of tokens)."""
        if self.error is not None:
            raise self.error
        if not self.finished:
            self._finish("length", self._decoded())
        return Generated(self.text, self.finish_reason, len(self.row.input_ids), len(self.tokens))

    def _decoded(self) -> str:
        return self.decode(self.tokens)

    def _final_length(self, decoded: str) -> int:
        end = len(decoded)
        if decoded.endswith("\ufffd"):  # part of a multi-byte character: wait for the rest
            end = len(decoded.rstrip("\ufffd"))
        for stop in self.row.stop:  # a suffix that may grow into a stop string is held back
            for size in range(min(len(stop) - 1, end), 0, -1):
                if decoded[:end].endswith(stop[:size]):
                    end -= size
                    break
        return end

    def _finish(self, reason: str, text: str) -> None:
        self._hand_out(text)
        self.finish_reason = reason

    def _hand_out(self, text: str) -> None:
        if len(text) > len(self.text) and text.startswith(self.text):
            self.text = text
        sent = self.row.sent
        if self.row.on_text is not None and len(self.text) > len(sent) and self.text.startswith(sent):
            self.row.sent = self.text
            try:
                self.row.on_text(self.text[len(sent) :])
            except Exception as error:  # noqa: BLE001 - the client's side of this row failed: this row ends
                self.fail(error)


class _RowStreamer:
    """transformers' streamer hook: every step's new token of each row goes to that row's decoder."""

    def __init__(self, decoders: list[RowDecoder]):
        self.decoders = decoders
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # the first call carries the input ids
            self.prompt_seen = True
            return
        for decoder, token in zip(self.decoders, value.reshape(len(self.decoders), -1)[:, -1].tolist()):
            decoder.push(token)

    def end(self) -> None:
        pass


class _RowSampling:
    """transformers' logits-processor hook that chooses every row's token by that row's own sampling
    (and holds its end token back until its min_tokens); generate then runs greedy, so the chosen token,
    the only one left, is the one it takes. This lets rows of any samplings share one forward pass. Every
    sampled row draws from a stream of its own (its seed, else its row's private one), so its tokens do
    not depend on its company; a row whose sampling fails fails alone."""

    def __init__(self, samplings: Sequence[Sampling], decoders: list[RowDecoder], end_ids: set[int], device: Any):
        self.samplings, self.decoders = samplings, decoders
        self.end_ids = sorted(end_ids)
        self.generators = [s.stream(d.row.private_seed, device) for s, d in zip(samplings, decoders)]
        self.steps = 0  # tokens generated so far (every row has as many, finished rows padded)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        scores = scores.clone()
        for row, (sampling, generator) in enumerate(zip(self.samplings, self.generators)):
            if self.decoders[row].finished:
                continue
            try:
                token = sampling.next_token(scores[row], self.steps, self.end_ids, generator)
            except Exception as error:  # noqa: BLE001 - e.g. logits that are not numbers: this row only
                self.decoders[row].fail(error)
                continue
            scores[row] = float("-inf")
            scores[row, token] = 0.0
        self.steps += 1
        return scores


class _RowsDone:
    """transformers' stopping-criteria hook: a row is done once its decoder is (or its client left)."""

    def __init__(self, decoders: list[RowDecoder]):
        self.decoders = decoders

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        done = [decoder.finished or decoder.row.cancelled() for decoder in self.decoders]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class Engine(AdapterCatalog):
    """adept's own engine: the frozen base and its adapters in one `MixedAdapterModel`; rows of different
    adapters share one forward pass (see the module docstring). Every model call holds `lock`, so
    adapters come and go between batches (or steps), never during one."""

    def __init__(self, base: Any, tokenizer: Any, model_name: str, max_batch_size: int = 32, max_wait_ms: float = 10.0):
        super().__init__(tokenizer, model_name, base)
        self.model = MixedAdapterModel(base.eval(), model_name)
        self.device = next(base.parameters()).device
        # A CPU's time is proportional to the padded tokens, whatever the batch: length-sorted chunks pad
        # less. An accelerator gains from width: one forward pass.
        self.score_chunk: int | None = SCORE_CHUNK_ON_CPU if self.device.type == "cpu" else None
        # None: generation runs a step at a time, rows leaving and joining between steps (`decoding.py`)
        self.stepwise_refused = stepwise_refused(self)
        self.batching = (max_batch_size, max_wait_ms)
        self.batcher = Batcher(self, max_batch_size, max_wait_ms, self.metrics)

    def _load(self, name: str, source: AdapterSource) -> int:
        self.model.add_adapter(name, source.directory)
        return self.model.adapted_embedding.adapters[name].prompt_len

    def _unload(self, name: str) -> None:
        self.model.remove_adapter(name)

    def row_decoder(self, row: GenerationRow) -> RowDecoder:
        return RowDecoder(self.decode, row, self.end_ids)

    def _held_bytes(self, name: str) -> int:
        adapter = self.model.adapted_embedding.adapters[name]
        weights = sum(tensor.numel() * tensor.element_size() for tensor in adapter.state_dict().values())
        return weights + self._prompt_cache_bytes(adapter.prompt_len)

    def _bytes_in_memory(self, numbers: int, prompt_len: int) -> int:
        return super()._bytes_in_memory(numbers, prompt_len) + self._prompt_cache_bytes(prompt_len)

    def _prompt_cache_bytes(self, prompt_len: int) -> int:
        """The keys and values of an adapter's prompt, kept once it has served a row (causal models that
        share prompts; see `prompt.sharing`)."""
        if not self.model.shares_prompt:
            return 0
        config = self.model.base.config.get_text_config(decoder=True)
        heads = getattr(config, "num_attention_heads", 0)
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        head_dim = getattr(config, "head_dim", None) or (config.hidden_size // heads if heads else 0)
        element = next(self.model.base.parameters()).element_size()
        return 2 * config.num_hidden_layers * kv_heads * head_dim * prompt_len * element

    def _base_facts(self) -> BaseFacts:
        return BaseFacts.of(self.model.base, self.model_name)

    def _free_memory(self) -> int | None:
        return available_memory(str(self.device))

    # -- serving: requests wait in the batcher's queue for company (see `batcher`) --------------------

    def start(self) -> None:
        if self.batcher.thread.ident is not None:  # a thread runs once: a restarted server gets a new one
            self.batcher = Batcher(self, *self.batching, self.metrics)
        self.batcher.start()

    def submit(self, job: Job) -> Future:
        return self.batcher.submit(job)

    def stop(self, timeout: float | None = None) -> list[Job]:
        return self.batcher.stop(timeout)

    def abandon(self) -> list[Job]:
        return self.batcher.abandon()

    # -- work --------------------------------------------------------------------------------------

    @torch.no_grad()
    def score(self, rows: Sequence[tuple[str | None, Example | str, Sequence[str]]]) -> list[list[float]]:
        """For each (adapter, input, candidates) the log-probability of each candidate target. The
        (row, candidate) pairs of every adapter run together: in one forward pass, or on a CPU in chunks
        of `score_chunk` pairs of similar length."""
        features, names = [], []
        for adapter, source, candidates in rows:
            encoder = self._encoder(adapter)
            example = source if isinstance(source, Example) else Example(source, "")
            with self.text_lock:
                features += [encoder.scoring_features(example, candidate) for candidate in candidates]
            names += [adapter] * len(candidates)
        order = sorted(range(len(features)), key=lambda i: -len(features[i]["input_ids"]))
        size = self.score_chunk or len(order)
        flat = [0.0] * len(features)
        with self.lock:
            for start in range(0, len(order), size):
                chunk = order[start : start + size]
                padded = pad_batch([features[i] for i in chunk], self.tokenizer.pad_token_id)
                batch = {k: v.to(self.device) for k, v in padded.items()}
                model = functools.partial(self.model, adapters=[names[i] for i in chunk])
                for i, value in zip(chunk, sequence_log_prob(model, batch, self.is_seq2seq).tolist()):
                    flat[i] = value
        out, start = [], 0
        for _, _, candidates in rows:
            out.append(flat[start : start + len(candidates)])
            start += len(candidates)
        return out

    @torch.no_grad()
    def generate(self, rows: Sequence[GenerationRow], sampling: Sampling | Sequence[Sampling]) -> list[Generated]:
        """Every row in one `generate` call, each sampled as `sampling` says (one for all rows, or one per
        row); a seeded row draws from its own stream, so its answer does not depend on the rows beside it.
        Rows that fail on their own raise RowsFailed with the others' results."""
        from transformers import LogitsProcessorList

        samplings = [sampling] * len(rows) if isinstance(sampling, Sampling) else list(sampling)
        if len(samplings) != len(rows):
            raise ValueError(f"{len(samplings)} samplings for {len(rows)} rows")
        decoders = [RowDecoder(self.decode, row, self.end_ids) for row in rows]
        batch = pad_batch([{"input_ids": row.input_ids} for row in rows], self.tokenizer.pad_token_id)
        chosen = _RowSampling(samplings, decoders, self.end_ids, self.device)
        with self.lock:
            self.model.generate(
                batch["input_ids"].to(self.device),
                [row.adapter for row in rows],
                batch["attention_mask"].to(self.device),
                max_new_tokens=max(row.max_tokens for row in rows),
                num_beams=1,
                do_sample=False,  # _RowSampling has chosen each row's token: the only one left
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.tokenizer.eos_token_id,
                streamer=_RowStreamer(decoders),
                stopping_criteria=[_RowsDone(decoders)],
                logits_processor=LogitsProcessorList([chosen]),
            )
        errors = {i: decoder.error for i, decoder in enumerate(decoders) if decoder.error is not None}
        if errors:
            raise RowsFailed([None if i in errors else d.close() for i, d in enumerate(decoders)], errors)
        return [decoder.close() for decoder in decoders]
