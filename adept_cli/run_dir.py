"""THE run-directory layout, and the rules that keep a run directory usable whatever happens to it.

```
<run>/config.yaml          resolved settings (format_version first)
<run>/metrics.jsonl        one JSON line per log / evaluation record
<run>/results.json         written once, at the end
<run>/predictions.jsonl    test predictions (save_predictions=true)
<run>/k_shot.json          the drawn training examples (k_shot=K)
<run>/best/                the best adapter so far (PEFT adapter / full model for lora / full)
<run>/checkpoints/step_N/  resumable checkpoints (see training/checkpoint.py)
<run>/tensorboard/         tracker logs (tensorboard=true)
<run>/.lock                held while a process trains in the run
```

Every file and folder is written atomically (scratch + rename); leftovers of an interrupted write are
hidden `.NAME.*.tmp` / `.NAME.old` entries, removed the next time the run starts.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import AdeptError
from .files import disk_failure, read_json_object

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
RESULTS_FILE = "results.json"
PREDICTIONS_FILE = "predictions.jsonl"
K_SHOT_FILE = "k_shot.json"
BEST_DIR = "best"
CHECKPOINTS_DIR = "checkpoints"
TENSORBOARD_DIR = "tensorboard"
LOCK_FILE = ".lock"


class RunDirError(AdeptError, RuntimeError):
    """A run directory is busy, damaged or not a run; the message names the path and what to do."""


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def config(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def metrics(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def results(self) -> Path:
        return self.path / RESULTS_FILE

    @property
    def k_shot(self) -> Path:
        return self.path / K_SHOT_FILE

    @property
    def predictions(self) -> Path:
        return self.path / PREDICTIONS_FILE

    @property
    def best(self) -> Path:
        return self.path / BEST_DIR

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS_DIR

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / f"step_{step:08d}"

    def checkpoint_folders(self) -> list[Path]:
        """Checkpoint folders, oldest first (complete as written; training/checkpoint.py checks the contents)."""
        if not self.checkpoints.is_dir():
            return []
        found = [p for p in self.checkpoints.glob("step_*") if p.is_dir() and p.name[5:].isdigit()]
        return sorted(found, key=lambda p: int(p.name[5:]))

    @contextmanager
    def writing(self, target: Path | None = None) -> Iterator[None]:
        """A full disk (or quota, or a read-only or failing one) while the run writes `target` (else the file
        the error names): one RunDirError naming it, what is intact and how to go on, instead of a
        traceback from deep inside torch or safetensors."""
        try:
            yield
        except RunDirError:
            raise
        except Exception as error:
            failure = disk_failure(error)
            if failure is None:
                raise
            where = target or failure.filename or self.path
            done = [path for path in self.checkpoint_folders() if path != target]
            kept = f"the last checkpoint, {done[-1]}, is intact" if done else "no checkpoint has been written yet"
            then = f"continue with adept train -o {self.path} --resume auto" if self.holds_a_run() else "run it again"
            raise RunDirError(f"cannot write {where}: {failure.strerror}; {kept}. Free space, then {then}") from None

    def holds_a_run(self) -> bool:
        return self.config.is_file()

    def status(self) -> str:
        """finished (results.json) | started (config.yaml, no results) | new."""
        if self.results.is_file():
            return "finished"
        return "started" if self.holds_a_run() else "new"

    def read_results(self) -> dict[str, Any] | None:
        """results.json of a finished run (None before it finishes); a damaged file is one error."""
        if not self.results.is_file():
            return None
        return read_json_object(self.results, RunDirError, "a run's results")

    def remove_leftovers(self) -> list[Path]:
        """Scratch folders of interrupted atomic writes and retired copies: never part of a run."""
        removed = []
        for folder in (self.path, self.checkpoints):
            if not folder.is_dir():
                continue
            for entry in folder.iterdir():
                if entry.name.startswith(".") and entry.name.endswith((".tmp", ".old")):
                    if entry.is_dir():
                        shutil.rmtree(entry, ignore_errors=True)
                    else:
                        entry.unlink(missing_ok=True)
                    removed.append(entry)
        return removed

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold `.lock` while training. A lock left by a killed process is free again (the kernel drops
        flock locks with their process), so it is taken over without asking."""
        path = self.path / LOCK_FILE
        while True:
            handle = open(path, "a+", encoding="utf-8")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                handle.close()
                if error.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                raise RunDirError(
                    f"{self.path} is in use by another adept process ({_holder(path)}); wait for it to finish "
                    "or stop it, then resume with --resume auto"
                ) from None
            # The holder before us may have removed the file between our open and our lock: retry then.
            if path.exists() and os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
                break
            handle.close()
        try:
            try:
                handle.seek(0)
                handle.truncate()
                handle.write(json.dumps({"pid": os.getpid(), "host": os.uname().nodename}) + "\n")
                handle.flush()
            except OSError as error:
                raise OSError(error.errno, error.strerror, str(path)) from None
            yield
        finally:
            path.unlink(missing_ok=True)
            handle.close()


def _holder(path: Path) -> str:
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
        return f"pid {holder['pid']} on {holder['host']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "pid unknown"


def read_metrics(path: Path) -> tuple[list[dict], int]:
    """The records of `metrics.jsonl` and how many unreadable lines were dropped (a line torn by a kill)."""
    if not path.is_file():
        return [], 0
    records, dropped = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            dropped += 1
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
        else:
            dropped += 1
    return records, dropped
