"""One formatted row of a task, and the error a malformed row raises: the data every task module shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class RowError(ValueError):
    """One row is malformed; the loader adds where the row came from."""


@dataclass(frozen=True)
class Example:
    """One formatted row: what the model reads, what it should write, and what scoring needs."""

    source: str
    target: str
    label: int | float | None = None  # class index (classification) or value (regression)
    references: tuple[str, ...] = ()  # gold answers (text tasks) / tests (code)
    group: Any = None  # rows scored together (MultiRC: one question)
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
