"""Dynamic batching for `adept serve`: requests wait up to `max_wait_ms` for company, then up to
`max_batch_size` rows run together, whatever adapter each names.

One thread runs the model. It takes the oldest waiting job, then whatever else arrives until that job
has waited `max_wait_ms` (no waiting at all when the queue already holds a full batch), and runs the
batch as at most two groups: all scoring rows in one forward pass, all generation rows in one `generate`
call, whatever their adapters, samplings, seeds, max_tokens, stop strings or streaming (each row is
sampled and stopped on its own; a seeded row draws from its own stream, so its seed reproduces its
answer in any company). A job's
failure is its own: a job whose adapter was removed while it waited fails alone; an error inside a
group's model call fails that group's jobs and the thread goes on with the next batch.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from ..errors import AdeptError
from ..tasks.example import Example
from .engine import Engine, GenerationRow, Sampling
from .metrics import Metrics

_STOP = object()


@dataclass
class Job:
    """One row of work: a scoring row (adapter, source text, candidates) or a generation row."""

    adapter: str | None
    score: tuple[Example | str, Sequence[str]] | None = None  # (input, candidates)
    generation: GenerationRow | None = None
    sampling: Sampling | None = None
    future: Future = field(default_factory=Future)
    enqueued: float = field(default_factory=time.monotonic)

    def group(self) -> str:
        return "score" if self.score is not None else "generate"

    def cancelled(self) -> bool:
        return self.generation is not None and self.generation.cancelled()


class Batcher:
    """The model thread and its queue (see the module docstring)."""

    def __init__(
        self, engine: Engine, max_batch_size: int = 32, max_wait_ms: float = 10.0, metrics: Metrics | None = None
    ):
        if max_batch_size < 1 or max_wait_ms < 0:
            raise AdeptError("max_batch_size must be >= 1 and max_wait_ms >= 0")
        self.engine = engine
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.metrics = metrics or Metrics()
        self.queue: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._loop, name="adept-batcher", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """Finish every job already queued, then end the thread."""
        self.queue.put(_STOP)
        self.thread.join()

    def submit(self, job: Job) -> Future:
        self.queue.put(job)
        return job.future

    def _loop(self) -> None:
        stopping = False
        while not stopping:
            first = self.queue.get()
            if first is _STOP:
                return
            batch = [first]
            while len(batch) < self.max_batch_size:
                try:
                    remaining = first.enqueued + self.max_wait - time.monotonic()
                    job = self.queue.get_nowait() if remaining <= 0 else self.queue.get(timeout=remaining)
                except queue.Empty:
                    break
                if job is _STOP:
                    stopping = True
                    break
                batch.append(job)
            self._run(batch)

    def _run(self, batch: list[Job]) -> None:
        started = time.monotonic()
        live = [job for job in batch if not job.cancelled() and job.future.set_running_or_notify_cancel()]
        self.metrics.count_batch(live, started)
        groups: dict[str, list[Job]] = {}
        for job in live:
            groups.setdefault(job.group(), []).append(job)
        for jobs in groups.values():
            self._run_group(jobs)
        with self.metrics.lock:
            self.metrics.busy_seconds += time.monotonic() - started

    def _run_group(self, jobs: list[Job]) -> None:
        with self.engine.lock:  # no adapter comes or goes between the check and the model call
            self._run_checked(jobs)

    def _run_checked(self, jobs: list[Job]) -> None:
        runnable = []
        for job in jobs:  # an adapter removed while the job waited fails that job only
            try:
                if job.adapter is not None:
                    self.engine.get(job.adapter)
                runnable.append(job)
            except AdeptError as error:
                job.future.set_exception(error)
        if not runnable:
            return
        try:
            if runnable[0].score is not None:
                results = self.engine.score([(job.adapter, *job.score) for job in runnable])
            else:
                generation = [job.generation for job in runnable]
                results = self.engine.generate(generation, [job.sampling or Sampling() for job in runnable])
                with self.metrics.lock:
                    self.metrics.generated_tokens += sum(result.completion_tokens for result in results)
        except Exception as error:  # noqa: BLE001 - the request fails, the server goes on
            for job in runnable:
                job.future.set_exception(error)
            return
        for job, result in zip(runnable, results):
            job.future.set_result(result)
