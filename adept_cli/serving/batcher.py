"""Dynamic batching for `adept serve`: requests wait up to `max_wait_ms` for company, then run together,
whatever adapter each names.

One thread runs the model. It takes the oldest waiting job, then whatever else arrives until that job
has waited `max_wait_ms` (no waiting at all when the queue already holds a full batch, nor while rows are
being generated: then whatever is queued joins at the next step). Scoring rows run as one forward pass,
whatever their adapters. Generation rows of a causal model are generated a step at a time
(`decoding.Decoding`): a row that ends leaves at once and its answer goes out, and waiting rows join
between two steps, up to `max_batch_size` rows at a time; other models (and configs the step loop does
not reproduce) run each batch's rows in one `generate` call to its longest row. Either way every row is
sampled and stopped on its own (its sampling, seed, max_tokens, stop strings, streaming; a seeded row
draws from its own stream, so its seed reproduces its answer in any company). The adapters rows name are
made ready first (one served from a folder is read now; at most `--max-resident` of those at a time).

A job's failure is its own: a job whose adapter was removed while it waited, or whose files turn out
damaged, fails alone, a row whose sampling fails ends alone, and a model call that fails as a whole runs
again without the row that fails alone (whole batches: in halves down to it; step by step: the rows then
open each run again alone); the others get their answers, exactly as alone, and the thread goes on.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, InvalidStateError
from typing import Any, Protocol

from ..errors import AdeptError
from .decoding import Decoding
from .metrics import Metrics
from .protocol import Generated, GenerationRow, Job, RowsFailed, Sampling, ServerStopping
from .residency import Residency

_STOP = object()


class ModelRunner(Protocol):
    """What the batcher runs batches on (adept's `engine.Engine`): adapters change only under `lock`."""

    lock: Any
    residency: Residency
    stepwise_refused: str | None  # why generation runs whole batches (None: a step at a time, `Decoding`)

    def row_decoder(self, row: GenerationRow) -> Any: ...
    def ready(self, names: Iterable[str]) -> dict[str, BaseException]: ...
    def release(self, names: Iterable[str]) -> None: ...
    def score(self, rows: Sequence[tuple[str | None, Any, Sequence[str]]]) -> list[list[float]]: ...
    def generate(self, rows: Sequence[GenerationRow], sampling: Sequence[Sampling]) -> list[Generated]: ...


class Batcher:
    """The model thread and its queue (see the module docstring)."""

    def __init__(
        self, engine: ModelRunner, max_batch_size: int = 32, max_wait_ms: float = 10.0, metrics: Metrics | None = None
    ):
        if max_batch_size < 1 or max_wait_ms < 0:
            raise AdeptError("max_batch_size must be >= 1 and max_wait_ms >= 0")
        self.engine = engine
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.metrics = metrics or Metrics()
        self.queue: queue.Queue = queue.Queue()
        self.running: list[Job] = []  # the batch the model thread is on
        refused = getattr(engine, "stepwise_refused", "")
        self.decoding = Decoding(engine, engine.row_decoder) if refused is None else None
        self.waiting: list[Job] = []  # generation rows waiting to join those being generated
        self.alone: list[Job] = []  # rows to run again one at a time (a step failed with them in it)
        self.abandoned: list[Job] = []  # failed by a shutdown past its deadline
        self.thread = threading.Thread(target=self._loop, name="adept-batcher", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float | None = None) -> list[Job]:
        """Finish every job already queued, then end the thread; give up after `timeout` seconds (a model
        call cannot be interrupted) and return the jobs left unfinished (see `abandon`)."""
        self.queue.put(_STOP)
        self.thread.join(timeout)
        return self.abandon() if self.thread.is_alive() else list(self.abandoned)

    def abandon(self) -> list[Job]:
        """Fail the jobs of the batch running now and of the queue with ServerStopping, so their requests
        are answered (503) while the model call goes on; returns them. For a shutdown past its deadline."""
        live = [live.job for live in self.decoding.rows] if self.decoding is not None else []
        candidates = {id(job): job for job in [*self.running, *live, *self.waiting, *self.alone]}
        dropped = [job for job in candidates.values() if not job.future.done()]
        while True:
            try:
                job = self.queue.get_nowait()
            except queue.Empty:
                break
            if job is not _STOP:
                dropped.append(job)
        for job in dropped:
            try:
                job.future.set_exception(ServerStopping("the server stopped before this request finished"))
            except InvalidStateError:  # it finished (or its client cancelled it) a moment ago
                continue
            self.abandoned.append(job)
        return list(self.abandoned)

    def submit(self, job: Job) -> Future:
        self.queue.put(job)
        return job.future

    def _loop(self) -> None:
        stopping = False
        while not stopping or self._generating():
            batch, stop = self._gather(wait=not self._generating() and not stopping)
            stopping = stopping or stop
            if batch:
                self._run(batch)
            if self._generating():
                self._advance()

    def _gather(self, wait: bool) -> tuple[list[Job], bool]:
        """The next batch (waiting for its first job and its company when `wait`, else only what is
        queued now) and whether the queue asked the thread to stop."""
        batch: list[Job] = []
        if wait:
            first = self.queue.get()
            if first is _STOP:
                return [], True
            batch.append(first)
        while len(batch) < self.max_batch_size:
            try:
                remaining = batch[0].enqueued + self.max_wait - time.monotonic() if wait else 0
                job = self.queue.get_nowait() if remaining <= 0 else self.queue.get(timeout=remaining)
            except queue.Empty:
                break
            if job is _STOP:
                return batch, True
            batch.append(job)
        return batch, False

    def _run(self, batch: list[Job]) -> None:
        started = time.monotonic()
        self.running = batch
        live = [job for job in batch if not job.cancelled() and job.future.set_running_or_notify_cancel()]
        self.metrics.count_batch(live, started)
        groups: dict[str, list[Job]] = {}
        for job in live:
            groups.setdefault(job.group(), []).append(job)
        for group, jobs in groups.items():
            if group == "generate" and self.decoding is not None:
                self.waiting.extend(jobs)  # they join the rows being generated at the next step
            else:
                self._run_group(jobs)
        with self.metrics.lock:
            self.metrics.busy_seconds += time.monotonic() - started

    # -- generation a step at a time -----------------------------------------------------------------

    def _generating(self) -> bool:
        return self.decoding is not None and bool(len(self.decoding) or self.waiting or self.alone)

    def _advance(self) -> None:
        """Let waiting rows join (as many as fit), then run one step."""
        started, decoding = time.monotonic(), self.decoding
        with self.engine.lock:  # adapters come and go between steps, never during one
            if self.alone:  # rows open when a step failed: each runs again on its own
                if not len(decoding):
                    self._join([self.alone.pop(0)])
            elif self._time_to_join():
                joining = decoding.admissible(self.waiting, self.max_batch_size - len(decoding))
                chosen = {id(job) for job in joining}
                self.waiting = [job for job in self.waiting if id(job) not in chosen]
                if joining:
                    self._join(joining)
            if len(decoding):
                try:
                    generated = decoding.step()
                except Exception as error:  # noqa: BLE001 - the rows run again alone; the bad one fails then
                    self._step_failed(error)
                    generated = 0
                with self.metrics.lock:
                    self.metrics.generated_tokens += generated
                    self.metrics.decode_steps += 1
        with self.metrics.lock:
            self.metrics.busy_seconds += time.monotonic() - started

    def _time_to_join(self) -> bool:
        """Whether waiting rows join before this step: each joining is a forward of its own, so rows join
        together, once a quarter of the batch waits, once the oldest has waited `max_wait_ms`, or when
        nothing else runs."""
        if not self.waiting:
            return False
        quarter = max(1, self.max_batch_size // 4)
        waited = time.monotonic() - self.waiting[0].enqueued
        return not len(self.decoding) or len(self.waiting) >= quarter or waited >= self.max_wait

    def _join(self, jobs: list[Job]) -> None:
        try:
            self.decoding.join(jobs)
        except Exception as error:  # noqa: BLE001 - the prefill failed whole: halves, down to the bad row
            if len(jobs) == 1:
                jobs[0].future.set_exception(error)
                return
            with self.metrics.lock:
                self.metrics.isolated_batches += 1
            self._join(jobs[: len(jobs) // 2])
            self._join(jobs[len(jobs) // 2 :])

    def _step_failed(self, error: Exception) -> None:
        jobs = self.decoding.take_all()
        if len(jobs) == 1:
            jobs[0].future.set_exception(error)
            return
        with self.metrics.lock:
            self.metrics.isolated_batches += 1
        self.alone.extend(jobs)

    # -- whole batches -------------------------------------------------------------------------------

    def _run_group(self, jobs: list[Job]) -> None:
        with self.engine.lock:  # no adapter comes or goes between the check and the model call
            self._run_checked(jobs)

    def _run_checked(self, jobs: list[Job]) -> None:
        for part in _parts(jobs, self.engine.residency.limit):
            names = {job.adapter for job in part if job.adapter is not None}
            errors = self.engine.ready(names)
            try:  # an adapter removed while the job waited, or damaged on disk, fails its jobs only
                for job in part:
                    if job.adapter in errors:
                        job.future.set_exception(errors[job.adapter])
                runnable = [job for job in part if job.adapter not in errors]
                if runnable:
                    self._run_isolated(runnable)
            finally:
                self.engine.release(names - errors.keys())

    def _run_isolated(self, jobs: list[Job]) -> None:
        """Run `jobs` as one model call. A row that fails on its own fails alone (RowsFailed); when the
        whole call fails, each half runs again without the other, down to the row that fails alone, so
        one bad row never takes its batch with it. (Rows run again give the same answer: every row is
        computed as it would be alone.)"""
        try:
            results: list[Any] = self._call(jobs)
        except RowsFailed as partial:
            results = [partial.errors.get(i, result) for i, result in enumerate(partial.results)]
        except Exception as error:  # noqa: BLE001 - the request fails, the server goes on
            if len(jobs) == 1:
                results = [error]
            else:
                with self.metrics.lock:
                    self.metrics.isolated_batches += 1
                middle = len(jobs) // 2
                self._run_isolated(jobs[:middle])
                self._run_isolated(jobs[middle:])
                return
        for job, result in zip(jobs, results):
            if isinstance(result, BaseException):
                job.future.set_exception(result)
            else:
                job.future.set_result(result)

    def _call(self, jobs: list[Job]) -> list[Any]:
        if jobs[0].score is not None:
            return self.engine.score([(job.adapter, *job.score) for job in jobs])
        try:
            samplings = [job.sampling or Sampling() for job in jobs]
            results = self.engine.generate([job.generation for job in jobs], samplings)
        except RowsFailed as partial:
            self._count_tokens([result for result in partial.results if result is not None])
            raise
        self._count_tokens(results)
        return results

    def _count_tokens(self, results: list[Any]) -> None:
        with self.metrics.lock:
            self.metrics.generated_tokens += sum(result.completion_tokens for result in results)


def _parts(jobs: list[Job], most_adapters: int | None) -> list[list[Job]]:
    """`jobs` in order, cut so that no part names more than `most_adapters` adapters (None: one part)."""
    if most_adapters is None:
        return [jobs]
    parts: list[list[Job]] = []
    names: set[str | None] = set()
    for job in jobs:
        if not parts or (job.adapter not in names and len(names - {None}) >= most_adapters and job.adapter):
            parts.append([])
            names = set()
        parts[-1].append(job)
        names.add(job.adapter)
    return parts
