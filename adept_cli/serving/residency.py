"""Which of the adapters served from folders are in memory now (`adept serve --max-resident N`).

An adapter served from a folder is read on its first request and stays until N others have been used
since; then the least recently used one that no batch is using goes (a later request reads it again,
checksum checked as on every read). Adapters named at start (`--adapter`) or added over HTTP are not
counted: they stay. The bound holds at every moment adept's engine runs a batch (a batch holds at most N
adapters from folders); the vLLM engine may pass it while more adapters than N have rows in flight."""

from __future__ import annotations

import os
from collections import Counter, OrderedDict
from collections.abc import Iterable

from ..errors import AdeptError

BYTES_PER_NUMBER = 4  # adapters are held in float32


class Residency:
    def __init__(self, limit: int | None = None):
        if limit is not None and limit < 1:
            raise AdeptError(f"--max-resident must be at least 1; got {limit}")
        self.limit = limit
        self.order: OrderedDict[str, int] = OrderedDict()  # name -> bytes, least recently used first
        self.pins: Counter[str] = Counter()  # batches (or vLLM requests) using each adapter now

    def __contains__(self, name: str) -> bool:
        return name in self.order

    def __len__(self) -> int:
        return len(self.order)

    @property
    def bytes(self) -> int:
        return sum(self.order.values())

    def used(self, name: str, size: int | None = None) -> None:
        """`name` is in memory (`size` bytes when it was just read) and was used now."""
        if size is not None:
            self.order[name] = size
        self.order.move_to_end(name)

    def pin(self, names: Iterable[str]) -> None:
        self.pins.update(names)

    def release(self, names: Iterable[str]) -> None:
        self.pins.subtract(names)
        self.pins += Counter()  # drop the zeros

    def surplus(self, extra: int = 0) -> list[str]:
        """The adapters to drop, least recently used first, to stay within the bound with `extra` more
        read in (those in use stay)."""
        over = 0 if self.limit is None else len(self.order) + extra - self.limit
        if over <= 0:
            return []
        idle = [name for name in self.order if not self.pins[name]]
        return idle[:over]

    def forget(self, name: str) -> None:
        self.order.pop(name, None)


def available_memory(device: str = "cpu") -> int | None:
    """Bytes that can still be allocated on `device` (None: unknown): free accelerator memory, or the
    kernel's estimate of memory available without swapping (MemAvailable)."""
    if device.startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None
