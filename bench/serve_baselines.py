"""The servers bench/serve.py compares adept's batcher with: the batcher that grouped rows by sampling
settings, one that runs one adapter at a time, and transformers + PEFT answering one request at a time."""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
PROMPT_LEN = 60  # every adapter's, adept's and PEFT's
NEW_TOKENS = 16  # a `generate` request's tokens, exactly
WORDS = ("negative", "positive")  # SST-2's label words
ADAPTERS = (("adept", 1), ("dept", 2), ("pt", 3), ("adept", 4))  # (method, seed) of the four adapters


def by_sampling_batcher(engine: Any, max_batch_size: int, max_wait_ms: float) -> Any:
    from adept_cli.serving import batcher as batching

    class BySampling(batching.Batcher):
        """The batcher as it was: generation rows grouped by sampling settings, a seeded row alone."""

        def _run(self, batch: list) -> None:
            started = time.monotonic()
            live = [job for job in batch if not job.cancelled() and job.future.set_running_or_notify_cancel()]
            self.metrics.count_batch(live, started)
            groups: dict[tuple, list] = {}
            for number, job in enumerate(live):
                if job.score is not None:
                    key: tuple = ("score",)
                else:
                    key = ("seeded", number) if job.sampling.seed is not None else ("generate", job.sampling)
                groups.setdefault(key, []).append(job)
            for jobs in groups.values():
                self._run_group(jobs)
            with self.metrics.lock:
                self.metrics.busy_seconds += time.monotonic() - started

    return whole_batches(BySampling(engine, max_batch_size, max_wait_ms))


def whole_batches(batcher: Any) -> Any:
    """`batcher` generating each batch until its longest row ends (the batcher before 2026-12-07)."""
    batcher.decoding = None
    return batcher


def grouped_batcher(engine: Any, max_batch_size: int, max_wait_ms: float) -> Any:
    from adept_cli.serving import batcher as batching

    class OneAdapterAtATime(batching.Batcher):
        """A batch holds one adapter's rows; the adapter of the oldest waiting request goes next."""

        def _loop(self) -> None:
            pending: deque = deque()
            while True:
                if not pending:
                    job = self.queue.get()
                    if job is batching._STOP:
                        return
                    pending.append(job)
                first = pending[0]
                while sum(job.adapter == first.adapter for job in pending) < self.max_batch_size:
                    remaining = first.enqueued + self.max_wait - time.monotonic()
                    try:
                        job = self.queue.get(timeout=remaining) if remaining > 0 else self.queue.get_nowait()
                    except batching.queue.Empty:
                        break
                    if job is batching._STOP:  # only sent once every request was answered
                        return
                    pending.append(job)
                batch = [job for job in pending if job.adapter == first.adapter][: self.max_batch_size]
                for job in batch:
                    pending.remove(job)
                self._run(batch)

    return whole_batches(OneAdapterAtATime(engine, max_batch_size, max_wait_ms))


class PeftSerial:
    """One PEFT model holding 4 PromptTuning adapters; one worker answers requests in arrival order."""

    def __init__(self, base: Any, tokenizer: Any):
        from peft import PromptTuningConfig, TaskType, get_peft_model

        config = PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=PROMPT_LEN)
        self.model = get_peft_model(base, config, adapter_name="a0")
        for index in range(1, len(ADAPTERS)):
            self.model.add_adapter(f"a{index}", config)
        self.model.eval()
        self.tokenizer = tokenizer
        self.queue: deque = deque()
        self.ready = threading.Condition()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.stopped = False
        self.thread.start()

    def submit(self, adapter: str, kind: str, source: str) -> Future:
        future: Future = Future()
        with self.ready:
            self.queue.append((adapter, kind, source, future))
            self.ready.notify()
        return future

    def stop(self) -> None:
        with self.ready:
            self.stopped = True
            self.ready.notify()
        self.thread.join()

    def _loop(self) -> None:
        while True:
            with self.ready:
                while not self.queue and not self.stopped:
                    self.ready.wait()
                if not self.queue:
                    return
                adapter, kind, source, future = self.queue.popleft()
            self.model.set_adapter(adapter)
            with torch.no_grad():
                future.set_result(self._score(source) if kind == "predict" else self._generate(source))

    def _score(self, source: str) -> list[float]:
        from adept_cli.encoding import Encoder, pad_batch
        from adept_cli.tasks import Example

        encoder = Encoder(self.tokenizer, False, 128, 8)
        features = [encoder.scoring_features(Example(source, ""), word) for word in WORDS]
        batch = pad_batch(features, self.tokenizer.pad_token_id)
        logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        logits, labels = logits[:, PROMPT_LEN:-1], batch["labels"][:, 1:]  # PEFT returns the prompt's too
        mask = labels != -100
        picked = logits.float().log_softmax(-1).gather(2, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return (picked * mask).sum(1).tolist()

    def _generate(self, source: str) -> str:
        ids = self.tokenizer(source, return_tensors="pt")
        out = self.model.generate(**ids, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                                  pad_token_id=self.tokenizer.pad_token_id)  # fmt: skip
        return self.tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)


# -- the load ------------------------------------------------------------------------------------------
