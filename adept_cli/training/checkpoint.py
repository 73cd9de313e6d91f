"""Resumable checkpoints: trainable tensors, optimizer, scheduler, RNG of every process, loop state.

Each checkpoint is written to a scratch directory and renamed into place, so `checkpoints/` only ever
holds complete ones; the frozen base model is never written.
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

from ..files import atomic_directory

CHECKPOINTS = "checkpoints"
TRAINABLE = "trainable.safetensors"
STATE = "trainer_state.json"


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return run_dir / CHECKPOINTS / f"step_{step:08d}"


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
    run_dir: Path,
    step: int,
    trainable: dict[str, torch.Tensor],
    optimizer: Any,
    scheduler: Any,
    rng_states: list[dict[str, Any]],
    loop_state: dict[str, Any],
    keep: int,
) -> Path:
    """Write (main process only) and prune to the `keep` most recent checkpoints."""
    target = checkpoint_path(run_dir, step)
    with atomic_directory(target) as scratch:
        save_file({k: v.contiguous() for k, v in trainable.items()}, str(scratch / TRAINABLE))
        torch.save(optimizer.state_dict(), scratch / "optimizer.pt")
        torch.save(scheduler.state_dict(), scratch / "scheduler.pt")
        for rank, state in enumerate(rng_states):
            torch.save(state, scratch / f"rng_state_{rank}.pt")
        (scratch / STATE).write_text(json.dumps(loop_state, indent=2) + "\n", encoding="utf-8")
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    folder = run_dir / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = [p for p in folder.glob("step_*") if (p / STATE).is_file() and (p / TRAINABLE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def read_checkpoint(path: Path, rank: int) -> dict[str, Any]:
    rng_file = path / f"rng_state_{rank}.pt"
    return {
        "trainable": load_file(str(path / TRAINABLE)),
        "optimizer": torch.load(path / "optimizer.pt", map_location="cpu", weights_only=False),
        "scheduler": torch.load(path / "scheduler.pt", map_location="cpu", weights_only=False),
        "rng": torch.load(rng_file, weights_only=False) if rng_file.is_file() else None,
        "loop": json.loads((path / STATE).read_text(encoding="utf-8")),
    }
