"""What `GET /metrics` reports: requests by route and status, batches and their sizes, time in the queue,
the adapters served and in memory."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Metrics:
    """What /metrics reports."""

    requests: dict[str, int] = field(default_factory=dict)  # "<route> <status>" -> count
    batches: int = 0
    rows: int = 0
    largest_batch: int = 0
    mixed_batches: int = 0  # batches holding rows of more than one adapter
    batch_sizes: dict[int, int] = field(default_factory=dict)  # rows per batch -> batches
    queue_seconds: float = 0.0
    generated_tokens: int = 0
    decode_steps: int = 0  # steps of generation a step at a time (rows joining and leaving between them)
    busy_seconds: float = 0.0
    isolated_batches: int = 0  # model calls that failed whole and ran again in halves (one bad row)
    adapters_served: int = 0  # every adapter a request may name now
    adapters_resident: int = 0  # of those, the ones in memory
    adapter_loads: int = 0  # reads of adapters served from folders (first requests, and after evictions)
    adapter_evictions: int = 0
    adapter_bytes: int = 0  # memory the adapters in memory take
    # what an engine that batches on its own (vLLM) cannot see: reported as null, left out of Prometheus
    not_seen: frozenset = frozenset()
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count_request(self, route: str, status: int) -> None:
        with self.lock:
            key = f"{route} {status}"
            self.requests[key] = self.requests.get(key, 0) + 1

    def count_batch(self, jobs: Sequence[Any], started: float) -> None:
        """A batch of jobs (each with its `adapter` and the time it was `enqueued`) that started running."""
        with self.lock:
            self.batches += 1
            self.rows += len(jobs)
            self.largest_batch = max(self.largest_batch, len(jobs))
            self.mixed_batches += len({job.adapter for job in jobs}) > 1
            self.batch_sizes[len(jobs)] = self.batch_sizes.get(len(jobs), 0) + 1
            self.queue_seconds += sum(started - job.enqueued for job in jobs)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            counted = {
                "requests": dict(self.requests),
                "batches": self.batches,
                "rows": self.rows,
                "mean_batch_size": self.rows / self.batches if self.batches else 0.0,
                "largest_batch": self.largest_batch,
                "mixed_batches": self.mixed_batches,
                "batch_sizes": {str(size): count for size, count in sorted(self.batch_sizes.items())},
                "mean_queue_seconds": self.queue_seconds / self.rows if self.rows else 0.0,
                "generated_tokens": self.generated_tokens,
                "decode_steps": self.decode_steps,
                "busy_seconds": self.busy_seconds,
                "isolated_batches": self.isolated_batches,
                "adapters_served": self.adapters_served,
                "adapters_resident": self.adapters_resident,
                "adapter_loads": self.adapter_loads,
                "adapter_evictions": self.adapter_evictions,
                "adapter_bytes": self.adapter_bytes,
                "tokens_per_second": self.generated_tokens / self.busy_seconds if self.busy_seconds else 0.0,
            }
        return {key: None if key in self.not_seen else value for key, value in counted.items()}

    def prometheus(self) -> str:
        """The snapshot in Prometheus' text format."""
        data = self.snapshot()
        lines = ["# TYPE adept_requests_total counter"]
        for key, count in sorted(data["requests"].items()):
            route, status = key.rsplit(" ", 1)
            lines.append(f'adept_requests_total{{route="{route}",status="{status}"}} {count}')
        for name, kind in (
            ("batches", "counter"),
            ("rows", "counter"),
            ("mean_batch_size", "gauge"),
            ("largest_batch", "gauge"),
            ("mixed_batches", "counter"),
            ("mean_queue_seconds", "gauge"),
            ("generated_tokens", "counter"),
            ("decode_steps", "counter"),
            ("busy_seconds", "counter"),
            ("isolated_batches", "counter"),
            ("adapters_served", "gauge"),
            ("adapters_resident", "gauge"),
            ("adapter_loads", "counter"),
            ("adapter_evictions", "counter"),
            ("adapter_bytes", "gauge"),
            ("tokens_per_second", "gauge"),
        ):
            if data[name] is None:
                continue
            suffix = "_total" if kind == "counter" else ""
            lines += [f"# TYPE adept_{name}{suffix} {kind}", f"adept_{name}{suffix} {data[name]}"]
        return "\n".join(lines) + "\n"
