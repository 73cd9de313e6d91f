"""Read task rows from local files or the Hugging Face hub, keeping where each row came from."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .spec import Task, TaskError

DATA_ENV = "ADEPT_DATA_DIR"
SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")


@dataclass(frozen=True)
class Record:
    row: dict[str, Any]
    origin: str  # "file:line" or "hub-id[split] row N", for error messages


HUB = "hub"  # the data_dir that skips local folders


def default_data_dirs() -> list[Path]:
    """$ADEPT_DATA_DIR, then ../shared/data beside the working directory or beside the source tree."""
    candidates = []
    if os.environ.get(DATA_ENV):
        candidates.append(Path(os.environ[DATA_ENV]).expanduser())
    candidates.append(Path.cwd().parent / "shared" / "data")
    candidates.append(Path(__file__).resolve().parents[3] / "shared" / "data")
    unique = []
    for candidate in candidates:
        if candidate not in unique:
            unique.append(candidate)
    return unique


def local_task_dir(task: Task, data_dir: str | os.PathLike | None) -> Path | None:
    """The folder holding the task's split files, or None to use the hub.

    An explicit `data_dir` may hold `<task>/<split>.<ext>` or `<split>.<ext>` directly; it must exist.
    `hub` reads from the hub even where a default data folder holds the task.
    """
    if data_dir == HUB:
        return None
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        if not root.is_dir():
            raise TaskError(f"--data-dir {root} is not a directory")
        for folder in (root / task.folder, root):
            if any(split_file(folder, name) for name in _all_source_names(task)):
                return folder
        raise TaskError(
            f"{root} holds no data for task {task.name!r}: expected {root / task.folder}/<split>"
            f"{{{','.join(SUFFIXES)}}} with splits {', '.join(_all_source_names(task))}"
        )
    for root in default_data_dirs():
        if (root / task.folder).is_dir():
            return root / task.folder
    return None


def _all_source_names(task: Task) -> list[str]:
    names: list[str] = []
    for split in ("train", "validation", "test"):
        for name in task.split_rule.source_splits(split):
            if name not in names:
                names.append(name)
    return names


def split_file(folder: Path, split: str) -> Path | None:
    for suffix in SUFFIXES:
        path = folder / f"{split}{suffix}"
        if path.is_file():
            return path
    return None


def read_local_split(folder: Path, split: str, why: str, hint: str = "") -> list[Record]:
    path = split_file(folder, split)
    if path is None:
        raise TaskError(f"{folder} has no {split}{{{','.join(SUFFIXES)}}} file, needed for {why}{hint}")
    records = read_file(path)
    if not records:
        raise TaskError(f"{path} is empty (needed for {why})")
    return records


def read_file(path: Path) -> list[Record]:
    """The rows of a data file; one that is not UTF-8 text, or not a readable parquet file, is a TaskError
    naming it."""
    try:
        return _read_by_suffix(path)
    except UnicodeDecodeError as error:
        raise TaskError(f"{path} is not UTF-8 text (byte {error.start}); save it as UTF-8") from None


def _read_by_suffix(path: Path) -> list[Record]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _read_jsonl(path)
    if suffix == ".json":
        return _read_json(path)
    if suffix in (".csv", ".tsv"):
        return _read_delimited(path, "\t" if suffix == ".tsv" else ",")
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(path).to_pylist()
        except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError, ArrowIOError an OSError
            raise TaskError(f"{path}: not a readable parquet file ({error})") from None
        return [Record(row, f"{path} row {i + 1}") for i, row in enumerate(rows)]
    raise TaskError(f"{path}: unsupported file type; use one of {', '.join(SUFFIXES)}")


def _read_jsonl(path: Path) -> list[Record]:
    records = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise TaskError(f"{path}:{number}: malformed JSON line ({error.msg})") from None
            if not isinstance(row, dict):
                raise TaskError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
            records.append(Record(row, f"{path}:{number}"))
    return records


def _read_json(path: Path) -> list[Record]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise TaskError(f"{path}:{error.lineno}: malformed JSON ({error.msg})") from None
    if isinstance(data, dict):
        data = data.get("data", data.get("rows"))
    if not isinstance(data, list):
        raise TaskError(f'{path}: expected a JSON list of objects (or {{"data": [...]}})')
    records = []
    for number, row in enumerate(data, start=1):
        if not isinstance(row, dict):
            raise TaskError(f"{path}: item {number} is not a JSON object")
        records.append(Record(row, f"{path} item {number}"))
    return records


def _read_delimited(path: Path, delimiter: str) -> list[Record]:
    records = []
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        if not reader.fieldnames:
            raise TaskError(f"{path}: no header line")
        line = reader.line_num
        for row in reader:
            if None in row or any(value is None for value in row.values()):
                raise TaskError(f"{path}:{line + 1}: expected {len(reader.fieldnames)} columns")
            records.append(Record(dict(row), f"{path}:{line + 1}"))
            line = reader.line_num
    return records


def read_hub_split(task: Task, split: str, why: str, local_hint: str) -> list[Record]:
    """Rows of `split` from the hub; offline or missing, one message naming the hub id and local layout."""
    hub = task.hub
    if hub is None:
        raise TaskError(f"task {task.name!r} has no hub source; {local_hint}")
    from ..hf import hub_offline, hub_reachable

    if not hub_offline() and not hub_reachable():
        raise TaskError(
            f"task {task.name!r}: split {split!r} ({why}) is not in the local data and the Hugging Face hub "
            f"cannot be reached (this machine seems offline). {local_hint}"
        )
    try:
        from datasets import load_dataset

        dataset = load_dataset(hub.path, hub.name, split=split)
    except Exception as error:  # datasets raises many types (connection, not found, config); all mean "unavailable"
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TaskError(
            f"task {task.name!r}: could not load split {split!r} of {hub.describe()} from the Hugging Face hub "
            f"({reason}), needed for {why}. Offline, {local_hint}"
        ) from None
    if hub.filter_field:
        dataset = dataset.filter(lambda row: row[hub.filter_field] == hub.filter_value)
    name = f"{hub.path}[{split}]"
    return [Record(row, f"{name} row {i + 1}") for i, row in enumerate(dataset)]
