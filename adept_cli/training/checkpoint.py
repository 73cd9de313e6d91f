"""Resumable checkpoints: trainable tensors, optimizer, scheduler, RNG of every process, loop state.

Each checkpoint is written to a scratch directory and renamed into place, and an old one is renamed
away before it is deleted, so `checkpoints/` only ever holds complete ones; the frozen base model is
never written. A checkpoint damaged on disk anyway (a full disk, a copy cut short) is detected when it
is read, and resuming falls back to the newest intact one.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..files import atomic_directory, sha256_file
from ..run_dir import RunDir, RunDirError

TRAINABLE = "trainable.safetensors"
OPTIMIZER = "optimizer.pt"
SCHEDULER = "scheduler.pt"
STATE = "trainer_state.json"
CHECKSUMS = "checksums.json"


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def write_checkpoint(
    run: RunDir,
    step: int,
    trainable: dict[str, torch.Tensor],
    optimizer: Any,
    scheduler: Any,
    rng_states: list[dict[str, Any]],
    loop_state: dict[str, Any],
    keep: int,
) -> Path:
    """Write (main process only) and prune to the `keep` most recent checkpoints."""
    target = run.checkpoint(step)
    with atomic_directory(target) as scratch:
        save_file({k: v.contiguous() for k, v in trainable.items()}, str(scratch / TRAINABLE))
        torch.save(optimizer.state_dict(), scratch / OPTIMIZER)
        torch.save(scheduler.state_dict(), scratch / SCHEDULER)
        for rank, state in enumerate(rng_states):
            torch.save(state, scratch / f"rng_state_{rank}.pt")
        (scratch / STATE).write_text(json.dumps(loop_state, indent=2) + "\n", encoding="utf-8")
        # every file's checksum, checked on resume: a bit flipped on disk is named and the checkpoint skipped
        sums = {file.name: sha256_file(file) for file in sorted(scratch.iterdir()) if file.is_file()}
        (scratch / CHECKSUMS).write_text(json.dumps(sums, indent=2) + "\n", encoding="utf-8")
    for old in list_checkpoints(run)[:-keep]:
        retired = old.with_name(f".{old.name}.old")  # gone from the list at once, deleted after
        old.rename(retired)
        shutil.rmtree(retired, ignore_errors=True)
    return target


def list_checkpoints(run: RunDir) -> list[Path]:
    """Checkpoint folders, oldest first (complete as written; `read_checkpoint` checks the contents)."""
    if not run.checkpoints.is_dir():
        return []
    found = [p for p in run.checkpoints.glob("step_*") if p.is_dir() and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def read_checkpoint(path: Path, rank: int) -> dict[str, Any]:
    """Everything a resumed process needs; a missing or damaged file raises RunDirError naming it."""

    def load(name: str, reader: Any) -> Any:
        file = path / name
        if not file.is_file():
            raise RunDirError(f"{file} is missing")
        try:
            return reader(file)
        except Exception as error:  # safetensors, pickle and JSON each fail in their own way on a torn file
            raise RunDirError(f"{file} is damaged ({type(error).__name__}: {str(error)[:120]})") from None

    def torch_file(file: Path) -> Any:
        return torch.load(file, map_location="cpu", weights_only=False)

    recorded = {}  # checkpoints written before checksums have none: they are read as they are
    if (path / CHECKSUMS).is_file():
        recorded = load(CHECKSUMS, lambda f: json.loads(f.read_text(encoding="utf-8")))
    for name, digest in recorded.items():
        if (path / name).is_file() and sha256_file(path / name) != digest:
            raise RunDirError(f"{path / name} does not match the checksum written with it (changed or damaged on disk)")
    rng_file = f"rng_state_{rank}.pt"
    state = {
        "loop": load(STATE, lambda f: json.loads(f.read_text(encoding="utf-8"))),
        "trainable": load(TRAINABLE, lambda f: load_file(str(f))),
        "optimizer": load(OPTIMIZER, torch_file),
        "scheduler": load(SCHEDULER, torch_file),
        "rng": load(rng_file, torch_file) if (path / rng_file).is_file() else None,
    }
    if not isinstance(state["loop"], dict) or not isinstance(state["loop"].get("step"), int):
        raise RunDirError(f"{path / STATE} is damaged (no step)")
    return state
