"""The model side of `adept serve`: one frozen base with named prompt adapters, and the two kinds of
batched work a server does over them: rank-scoring label words (`/v1/predict` on a classification task)
and generation (completions, and `/v1/predict` on other tasks).

Rows of different adapters share one forward pass (`MixedAdapterModel`): scoring flattens every
(row, label word) pair into one batch, so adapters of different tasks, with different label words, mix
too. Generation runs one `generate` call per batch; each row stops on its own (end token, its stop
strings, its max_tokens, or its client going away) and its text is decoded as it grows, so a streamed
answer and a whole one are the same text.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import torch

from ..encoding import Encoder, chat_format, pad_batch
from ..evaluation.evaluate import max_new_tokens, sequence_log_prob
from ..hf import context_limit, is_seq2seq, positions_problem
from ..prompt.adapter_files import AdapterSource, adapter_source
from ..prompt.model import AdapterNotFound, MixedAdapterModel
from ..tasks.example import Example, RowError
from ..trained import DEFAULT_TARGET_LENGTH, checked_evaluation
from .batcher import Batcher
from .metrics import Metrics
from .protocol import (
    AdapterOutsideFolders,
    Generated,
    GenerationRow,
    Job,
    RequestError,
    RowsFailed,
    Sampling,
    ServedAdapter,
)

# Inputs without a task (completions, plain text) are cut to this many tokens only when the model itself
# states no limit (relative-position models such as T5).
SCORE_CHUNK_ON_CPU = 8


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
        self.generators = [
            None if s.greedy else torch.Generator(device=device).manual_seed(_seed(s, d.row))
            for s, d in zip(samplings, decoders)
        ]
        self.steps = 0  # tokens generated so far (every row has as many, finished rows padded)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        scores = scores.clone()
        for row, (sampling, generator) in enumerate(zip(self.samplings, self.generators)):
            if self.decoders[row].finished:
                continue
            if self.steps < sampling.min_tokens and self.end_ids:
                scores[row, self.end_ids] = float("-inf")
            if not sampling.greedy:
                try:
                    token = sampling.sample(scores[row], generator)
                except Exception as error:  # noqa: BLE001 - e.g. logits that are not numbers: this row only
                    self.decoders[row].fail(error)
                    continue
                scores[row] = float("-inf")
                scores[row, token] = 0.0
        self.steps += 1
        return scores


def _seed(sampling: Sampling, row: GenerationRow) -> int:
    return sampling.seed if sampling.seed is not None else row.private_seed


class _RowsDone:
    """transformers' stopping-criteria hook: a row is done once its decoder is (or its client left)."""

    def __init__(self, decoders: list[RowDecoder]):
        self.decoders = decoders

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        done = [decoder.finished or decoder.row.cancelled() for decoder in self.decoders]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class AdapterCatalog:
    """What every engine holds besides its model: the adapters by name, the task that formats each one's
    /v1/predict rows, and turning requests into token ids. A subclass runs the model (`Engine`: adept's own, in this
    process; `serving.vllm_engine.VllmEngine`: vLLM) and loads or drops an adapter's weights
    (`_load`, `_unload`). Adapter changes hold `lock`; the tokenizer, which a fast tokenizer does not
    allow from two threads at once, is used under `text_lock`."""

    def __init__(self, tokenizer: Any, model_name: str, config: Any):
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.config = config
        self.is_seq2seq = is_seq2seq(config)
        self.context = context_limit(config, tokenizer)
        self.adapters: dict[str, ServedAdapter] = {}
        self.lock = threading.RLock()
        self.text_lock = threading.Lock()
        self.base_encoder = Encoder(tokenizer, self.is_seq2seq, self.context, DEFAULT_TARGET_LENGTH)
        end = tokenizer.eos_token_id
        self.end_ids = {end} if end is not None else set()

    def _load(self, name: str, source: AdapterSource) -> int:
        """Make the adapter's weights available under `name`; returns its prompt length."""
        raise NotImplementedError

    def _unload(self, name: str) -> None:
        raise NotImplementedError

    # -- adapters ----------------------------------------------------------------------------------

    def add(
        self, name: str, path: str | Path, task: str | None = None, allowed: Callable[[Path], bool] | None = None
    ) -> ServedAdapter:
        """Load a run's best adapter or an adapter directory under `name`, with the task that formats its
        /v1/predict inputs (the recorded one unless `task` is given). A task file is read without running
        its code (serving formats rows, never scores them). `allowed`, where given (adapters added over
        HTTP), must accept every file the adapter is read from: its directory and a recorded task file."""
        from ..tasks import get_task, is_task_file

        source = adapter_source(path)
        if allowed is not None and not allowed(source.directory.resolve()):
            raise AdapterOutsideFolders(str(path))
        if allowed is not None:  # a symbolic link inside an allowed folder may point anywhere: follow each
            for entry in sorted(source.directory.rglob("*")):
                if not allowed(entry.resolve()):
                    raise RequestError(
                        f"{path}: {entry.relative_to(source.directory)} is a link to a file outside the folders this "
                        "server loads from (adept serve --adapter-dir); copy the file into the folder instead",
                        "adapter_not_allowed",
                        403,
                    )
        evaluation = checked_evaluation(source.evaluation, source.directory)
        several = evaluation.get("tasks")
        if task is None and several:
            raise RequestError(
                f"{path} was trained on several tasks ({', '.join(several)}); name the one that formats its "
                '/v1/predict rows (--task NAME=TASK, or "task" when adding it)',
                "task_required",
            )
        task_name = task or evaluation.get("task")
        if allowed is not None and task_name and is_task_file(task_name) and not allowed(Path(task_name).resolve()):
            raise RequestError(
                f"{path} records the task file {task_name!r}, outside the folders this server loads from; "
                'name a built-in task with "task"',
                "task_not_allowed",
                403,
            )
        chosen = get_task(task_name, run_code=False) if task_name else None
        target_length = evaluation.get("max_target_length") or DEFAULT_TARGET_LENGTH
        chat = chat_format(self.tokenizer, evaluation.get("chat_template"), self.is_seq2seq)
        with self.lock:
            if name in self.adapters:
                raise RequestError(f"an adapter named {name!r} is already loaded; remove it first", "adapter_exists")
            prompt_len = self._load(name, source)
            # the input length it was trained with, else its task's (both must fit, with the prompt and the
            # answer), else whatever room the prompt leaves (completions are checked as they come)
            max_length = evaluation.get("max_length") or (chosen.max_length if chosen else None)
            problem = max_length and positions_problem(
                self.config, self.model_name, prompt_len, max_length, target_length
            )
            max_length = max_length or self.context - prompt_len
            if problem:
                self._unload(name)
                raise RequestError(f"{source.directory}: {problem}", "adapter_too_long")
            encoder = Encoder(self.tokenizer, self.is_seq2seq, max_length, target_length, chat)
            served = ServedAdapter(name, source.method, str(path), prompt_len, chosen, encoder)
            self.adapters[name] = served
        return served

    def remove(self, name: str) -> None:
        with self.lock:
            self.get(name)
            self._unload(name)
            del self.adapters[name]

    def get(self, name: str) -> ServedAdapter:
        served = self.adapters.get(name)
        if served is None:
            loaded = ", ".join(self.adapters) or "none"
            raise AdapterNotFound(
                f"no adapter named {name!r} (loaded: {loaded}; the base model is {self.model_name!r})"
            )
        return served

    def resolve(self, name: str) -> str | None:
        """The adapter a request's `model` names; None for the base model itself."""
        if name == self.model_name:
            return None
        self.get(name)
        return name

    # -- inputs ------------------------------------------------------------------------------------

    def prompt_ids(self, adapter: str | None, text: str, max_tokens: int) -> list[int]:
        """A completion prompt's token ids, refused when it and the new tokens exceed the model's context."""
        if max_tokens > self.context:
            raise RequestError(f"max_tokens may be at most {self.context} (the model's positions)", "max_tokens")
        with self.text_lock:
            ids = self.tokenizer(text)["input_ids"]
        slots = self.get(adapter).prompt_len if adapter is not None else 0
        if not ids and not slots:
            raise RequestError("the prompt is empty (no tokens)", "empty_prompt")
        limit = self.context - slots - (0 if self.is_seq2seq else max_tokens)
        if len(ids) > limit:
            raise RequestError(
                f"the prompt is {len(ids)} tokens; this model takes at most {self.context} positions, so with "
                f"{slots} prompt slots"
                + ("" if self.is_seq2seq else f" and max_tokens {max_tokens}")
                + f" the prompt may have {max(limit, 0)} tokens",
                "context_length_exceeded",
            )
        return ids

    def task_query(self, adapter: str, row: dict[str, Any] | str) -> Example:
        """A /v1/predict input formatted as the adapter's task formats it (see `Task.query`)."""
        served = self.get(adapter)
        if served.task is None:
            raise RequestError(
                f"adapter {adapter!r} records no task, so /v1/predict cannot format its inputs; add it with a "
                "task, or use /v1/completions",
                "no_task",
            )
        try:
            return served.task.query(row)
        except RowError as error:
            raise RequestError(str(error), "bad_input") from None

    def decode(self, tokens: list[int]) -> str:
        with self.text_lock:
            return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def _encoder(self, adapter: str | None) -> Encoder:
        return self.base_encoder if adapter is None else self.get(adapter).encoder

    # -- the predict route --------------------------------------------------------------------------

    def predict_kind(self, adapter: str) -> str:
        task = self.get(adapter).task
        return "classification" if task is not None and task.kind == "classification" else "generation"

    def predict_generation_row(self, adapter: str, query: Example) -> GenerationRow:
        """Greedy generation as `adept predict` runs it: the task's input length and answer length."""
        served = self.get(adapter)
        with self.text_lock:
            ids, new_tokens = served.encoder.prompt_ids(query), max_new_tokens(served.task, served.encoder)
        return GenerationRow(adapter, ids, new_tokens)


class Engine(AdapterCatalog):
    """adept's own engine: the frozen base and its adapters in one `MixedAdapterModel`; rows of different
    adapters share one forward pass (see the module docstring). Every model call holds `lock`, so
    adapters come and go between batches, never during one."""

    def __init__(self, base: Any, tokenizer: Any, model_name: str, max_batch_size: int = 32, max_wait_ms: float = 10.0):
        super().__init__(tokenizer, model_name, base)
        self.model = MixedAdapterModel(base.eval(), model_name)
        self.batching = (max_batch_size, max_wait_ms)
        self.metrics = Metrics()
        self.batcher = Batcher(self, max_batch_size, max_wait_ms, self.metrics)
        self.device = next(base.parameters()).device
        # A CPU's time is proportional to the padded tokens, whatever the batch: length-sorted chunks pad
        # less. An accelerator gains from width: one forward pass.
        self.score_chunk: int | None = SCORE_CHUNK_ON_CPU if self.device.type == "cpu" else None

    def _load(self, name: str, source: AdapterSource) -> int:
        self.model.add_adapter(name, source.directory)
        return self.model.adapted_embedding.adapters[name].prompt_len

    def _unload(self, name: str) -> None:
        self.model.remove_adapter(name)

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
