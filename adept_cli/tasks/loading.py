"""Turn a task's source rows into train / validation / test examples by its split rule.

Every requested split is read, split and formatted here, before any training starts, so that a bad row
fails the run at once with its file, line and field.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .example import Example, RowError
from .sources import SUFFIXES, Record, local_task_dir, read_file, read_hub_split, read_local_split
from .spec import Task, TaskError

SPLITS = ("train", "validation", "test")
DEFAULT_SPLIT_SEED = 42  # the reference code's value, here a setting


@dataclass
class TaskData:
    task: Task
    splits: dict[str, list[Example]]
    drawn: dict | None = None  # a k-shot draw of the train split (see few_shot.py)

    def __getitem__(self, split: str) -> list[Example]:
        return self.splits[split]


def shuffled_indices(count: int, seed: int) -> list[int]:
    """The permutation the ATTEMPT / MPT / DePT code uses (torch.randperm with a seeded generator)."""
    import torch

    generator = torch.Generator()
    generator.manual_seed(seed)
    return torch.randperm(count, generator=generator).tolist()


class _Reader:
    """Reads each source split once, from the local folder if there is one, else from the hub."""

    def __init__(self, task: Task, data_dir: str | os.PathLike | None):
        self.task = task
        self.folder = None if task.data_files else local_task_dir(task, data_dir)
        self.cache: dict[str, list[Record]] = {}

    @property
    def source(self) -> str:
        if self.task.data_files:
            return self.task.origin
        return str(self.folder) if self.folder else (self.task.hub.describe() if self.task.hub else "?")

    def read(self, name: str, why: str) -> list[Record]:
        if name not in self.cache:
            if self.task.data_files:
                self.cache[name] = self._read_declared(name, why)
            elif self.folder is not None:
                self.cache[name] = read_local_split(self.folder, name, why, self._hub_hint())
            else:
                hint = (
                    f"put {name}{{{','.join(SUFFIXES)}}} under <data-dir>/{self.task.folder}/ and pass --data-dir "
                    f"(or set ADEPT_DATA_DIR); HF_HUB_OFFLINE=1 skips the hub's retries"
                )
                self.cache[name] = read_hub_split(self.task, name, why, hint)
        return self.cache[name]

    def _hub_hint(self) -> str:
        """Why the hub was not asked: a task's local folder stands for all of its splits."""
        if self.task.hub is None:
            return ""
        return (
            f". A local folder is read instead of the hub for all of {self.task.name}'s splits: add the file "
            f"there, or pass --data-dir hub (data_dir: hub) to read {self.task.hub.describe()} from the hub"
        )

    def _read_declared(self, name: str, why: str) -> list[Record]:
        files = dict(self.task.data_files)
        if name not in files:
            raise TaskError(
                f"task {self.task.name!r} ({self.task.origin}) declares no {name!r} data file, needed for {why}"
            )
        path = Path(files[name])
        if not path.is_file():
            raise TaskError(f"{path} not found ({self.task.origin}, data_files.{name})")
        records = read_file(path)
        if not records:
            raise TaskError(f"{path} is empty (needed for {why})")
        return records


def _split_records(task: Task, split: str, reader: _Reader, seed: int) -> list[Record]:
    rule = task.split_rule
    if rule.kind == "fixed":
        name = dict(rule.sources)[split]
        return reader.read(name, f"the {split} split")
    if rule.kind == "halve":
        if split == "train":
            return reader.read("train", "the train split")
        rows = reader.read("validation", f"the {split} split (half of the shuffled source validation set)")
        order = shuffled_indices(len(rows), seed)
        half = len(rows) // 2
        chosen = order[:half] if split == "validation" else order[half:]
        return [rows[i] for i in chosen]
    if rule.kind == "holdout":
        if split == "test":
            return reader.read(rule.test_source, f"the test split (the source {rule.test_source} set)")
        rows = reader.read("train", f"the {split} split ({rule.holdout:,} shuffled training rows are validation)")
        order = shuffled_indices(len(rows), seed)
        if split == "validation":
            return [rows[i] for i in order[: rule.holdout]]
        kept = order[rule.holdout :]
        return [rows[i] for i in (kept[: rule.train_cap] if rule.train_cap else kept)]
    # halve_all: pool the source splits, shuffle, half train (minus a validation holdout), half test
    pool = [record for name in rule.pool for record in reader.read(name, f"the {split} split (pooled 50/50)")]
    order = shuffled_indices(len(pool), seed)
    half = len(pool) // 2
    train, test = order[:half], order[half:]
    chosen = {"validation": train[: rule.holdout], "train": train[rule.holdout :], "test": test}[split]
    return [pool[i] for i in chosen]


def format_records(task: Task, records: Iterable[Record]) -> list[Example]:
    examples = []
    for record in records:
        try:
            examples.append(task.example(record.row))
        except RowError as error:
            raise TaskError(f"{record.origin}: {error}") from None
    return examples


def load_task_data(
    task: Task,
    splits: Iterable[str] = SPLITS,
    data_dir: str | os.PathLike | None = None,
    seed: int = DEFAULT_SPLIT_SEED,
    limits: dict[str, int] | None = None,
) -> TaskData:
    """Read, split and format the requested splits. `limits` keeps the first N examples of a split."""
    reader = _Reader(task, data_dir)
    out: dict[str, list[Example]] = {}
    for split in splits:
        if split not in SPLITS:
            raise TaskError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        records = _split_records(task, split, reader, seed)
        if not records:
            raise TaskError(f"task {task.name!r}: the {split} split is empty (source: {reader.source})")
        examples = format_records(task, records)
        limit = (limits or {}).get(split)
        out[split] = examples[:limit] if limit else examples
    return TaskData(task, out)


def describe_local(task: Task, folder: Path | None) -> dict[str, int]:
    """Row counts of the task's local split files (no parsing), for `adept tasks`."""
    from .sources import split_file

    counts = {}
    if folder is None:
        return counts
    for path in sorted(folder.iterdir()):
        if path.suffix in SUFFIXES and split_file(folder, path.stem) == path:
            counts[path.stem] = _count_rows(path)
    return counts


def _count_rows(path: Path) -> int:
    if path.suffix == ".jsonl":
        with open(path, "rb") as handle:
            return sum(1 for line in handle if line.strip())
    if path.suffix in (".csv", ".tsv"):
        with open(path, "rb") as handle:
            return max(sum(1 for line in handle if line.strip()) - 1, 0)
    return len(read_file(path))
