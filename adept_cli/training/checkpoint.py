"""Resumable checkpoints: trainable tensors, optimizer, scheduler, RNG of every process, loop state.

Each checkpoint is written to a scratch directory and renamed into place, and an old one is renamed
away before it is deleted, so `checkpoints/` only ever holds complete ones; the frozen base model is
never written.

Nothing in a checkpoint can run code when it is read: tensors are safetensors files and everything else
is JSON (`write_state` / `read_state`), never a pickle. Checkpoints written by earlier versions as
`.pt` pickles are read with torch's weights-only loader, which refuses anything but tensors and plain
data. Every file's sha256 is recorded in `checksums.json`; a checkpoint is *verified* when that file lists
exactly the files beside it and each matches. Checksums catch damage (a full disk, a copy cut short, a
flipped bit), not a stranger who can write the folder: that is what the pickle-free format is for.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..files import atomic_directory, sha256_file
from ..run_dir import RunDir, RunDirError

TRAINABLE = "trainable.safetensors"
OPTIMIZER = "optimizer"
SCHEDULER = "scheduler"
STATE = "trainer_state.json"
CHECKSUMS = "checksums.json"
SHA256 = re.compile(r"[0-9a-f]{64}")


class UnverifiedCheckpoint(RunDirError):
    """A checkpoint without checksums.json (written before checksums were recorded, or the file removed):
    intact as far as anyone can tell, but nothing says so."""


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


def rng_file(rank: int) -> str:
    return f"rng_state_{rank}"


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
        write_state(scratch, OPTIMIZER, optimizer.state_dict())
        write_state(scratch, SCHEDULER, scheduler.state_dict())
        for rank, state in enumerate(rng_states):
            write_state(scratch, rng_file(rank), state)
        (scratch / STATE).write_text(json.dumps(loop_state, indent=2) + "\n", encoding="utf-8")
        # every file's checksum, checked on resume: a bit flipped on disk is named and the checkpoint skipped
        sums = {file.name: sha256_file(file) for file in sorted(scratch.iterdir()) if file.is_file()}
        (scratch / CHECKSUMS).write_text(json.dumps(sums, indent=2) + "\n", encoding="utf-8")
    for old in run.checkpoint_folders()[:-keep]:
        retired = old.with_name(f".{old.name}.old")  # gone from the list at once, deleted after
        old.rename(retired)
        shutil.rmtree(retired, ignore_errors=True)
    return target


def verify_checkpoint(path: Path) -> None:
    """Check every file of the checkpoint `path` against checksums.json. Raises UnverifiedCheckpoint when
    there is no checksums.json, RunDirError naming the file when it is damaged, partial or names anything
    but the files beside it, or when a file does not match."""
    listing = path / CHECKSUMS
    if not listing.is_file():
        raise UnverifiedCheckpoint(f"{path} has no {CHECKSUMS}, so its files cannot be verified")
    try:
        recorded = json.loads(listing.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:
        raise RunDirError(f"{listing} is damaged ({type(error).__name__}); the checkpoint is unverified") from None
    if not isinstance(recorded, dict):
        raise RunDirError(f"{listing} is damaged (not a JSON object); the checkpoint is unverified")
    present = {file.name for file in path.iterdir() if file.name != CHECKSUMS}
    for name, digest in recorded.items():
        if name not in present:  # a path such as ../../config.yaml is never a file beside it
            raise RunDirError(f"{listing} lists {name[:80]!r}, which is not a file of the checkpoint; unverified")
        if not isinstance(digest, str) or not SHA256.fullmatch(digest):
            raise RunDirError(f"{listing}: the checksum of {name} is not a sha256 digest; the checkpoint is unverified")
    unlisted = sorted(present - set(recorded))
    if unlisted:
        raise RunDirError(f"{listing} does not list {', '.join(unlisted)}; the checkpoint is unverified")
    for name, digest in recorded.items():
        if not (path / name).is_file():
            raise RunDirError(f"{path / name} is not a file; the checkpoint is unverified")
        if sha256_file(path / name) != digest:
            raise RunDirError(f"{path / name} does not match the checksum written with it (changed or damaged on disk)")


def read_checkpoint(path: Path, rank: int, verified: bool = True) -> dict[str, Any]:
    """Everything a resumed process needs. Verified first (see `verify_checkpoint`) unless `verified` is
    False (the caller has said why it reads an unverified one); a missing or malformed file raises
    RunDirError naming it. Nothing read here can run code."""
    if verified:
        verify_checkpoint(path)

    def load(name: str, reader: Any) -> Any:
        file = path / name
        if not file.is_file():
            raise RunDirError(f"{file} is missing")
        try:
            return reader(file)
        except RunDirError:
            raise
        except Exception as error:  # safetensors and JSON each fail in their own way on a torn file
            raise RunDirError(f"{file} is damaged ({type(error).__name__}: {str(error)[:120]})") from None

    state = {
        "loop": load(STATE, lambda f: json.loads(f.read_text(encoding="utf-8"))),
        "trainable": load(TRAINABLE, lambda f: load_file(str(f))),
        "optimizer": read_state(path, OPTIMIZER),
        "scheduler": read_state(path, SCHEDULER),
        "rng": read_state(path, rng_file(rank)) if _state_files(path, rng_file(rank)) else None,
    }
    if not isinstance(state["loop"], dict) or not isinstance(state["loop"].get("step"), int):
        raise RunDirError(f"{path / STATE} is damaged (no step)")
    return state


# -- state without pickles: JSON for the structure, safetensors for the tensors -----------------------
#
# Every JSON object in NAME.json is a tag: {"dict": [[key, value], ...]} (keys of any plain type, such
# as the optimizer's integer parameter ids), {"tuple": [...]}, {"tensor": "NAME"} (a tensor of
# NAME.safetensors) or {"ndarray": [...], "dtype": "uint32"} (numpy's generator state). Lists, strings,
# numbers, booleans and null are themselves.

NDARRAY_DTYPES = ("uint32", "int64", "float64", "uint8")


def write_state(folder: Path, name: str, value: Any) -> None:
    """`value` (dicts, lists, tuples, numbers, strings, tensors, numpy arrays) as NAME.json (+ NAME.safetensors)."""
    tensors: dict[str, torch.Tensor] = {}

    def encode(item: Any) -> Any:
        if isinstance(item, torch.Tensor):
            key = str(len(tensors))
            tensors[key] = item.detach().to("cpu").contiguous().clone()
            return {"tensor": key}
        if isinstance(item, np.ndarray):
            if str(item.dtype) not in NDARRAY_DTYPES:
                raise TypeError(f"cannot store a numpy array of {item.dtype}")
            return {"ndarray": item.tolist(), "dtype": str(item.dtype)}
        if isinstance(item, dict):
            return {"dict": [[encode(key), encode(entry)] for key, entry in item.items()]}
        if isinstance(item, tuple):
            return {"tuple": [encode(entry) for entry in item]}
        if isinstance(item, list):
            return [encode(entry) for entry in item]
        if item is None or isinstance(item, (bool, int, float, str)):
            return item
        raise TypeError(f"cannot store a {type(item).__name__} in a checkpoint")

    structure = encode(value)
    if tensors:
        save_file(tensors, str(folder / f"{name}.safetensors"))
    (folder / f"{name}.json").write_text(json.dumps(structure) + "\n", encoding="utf-8")


def read_state(folder: Path, name: str) -> Any:
    """What `write_state` wrote (or, from a checkpoint of an earlier version, NAME.pt read weights-only)."""
    structure_file, tensor_file, legacy = (folder / f"{name}{suffix}" for suffix in (".json", ".safetensors", ".pt"))
    if not structure_file.is_file() and legacy.is_file():
        return _read_legacy(legacy)
    if not structure_file.is_file():
        raise RunDirError(f"{structure_file} is missing")
    try:
        structure = json.loads(structure_file.read_text(encoding="utf-8"))
        tensors = load_file(str(tensor_file)) if tensor_file.is_file() else {}
    except Exception as error:  # a torn JSON or safetensors file
        raise RunDirError(f"{structure_file.parent / name} is damaged ({type(error).__name__})") from None

    def decode(item: Any) -> Any:
        if isinstance(item, list):
            return [decode(entry) for entry in item]
        if not isinstance(item, dict):
            return item
        if set(item) == {"dict"} and isinstance(item["dict"], list):
            return {_hashable(decode(key)): decode(entry) for key, entry in item["dict"]}
        if set(item) == {"tuple"} and isinstance(item["tuple"], list):
            return tuple(decode(entry) for entry in item["tuple"])
        if set(item) == {"tensor"} and item["tensor"] in tensors:
            return tensors[item["tensor"]]
        if set(item) == {"ndarray", "dtype"} and item["dtype"] in NDARRAY_DTYPES:
            return np.array(item["ndarray"], dtype=item["dtype"])
        raise ValueError(f"an entry that is not stored state: {str(item)[:60]}")

    try:
        return decode(structure)
    except (ValueError, TypeError, RecursionError) as error:
        raise RunDirError(f"{structure_file} is damaged ({error})") from None


def _hashable(key: Any) -> Any:
    if isinstance(key, (list, dict)):
        raise ValueError("a dictionary key that is a list or a mapping")
    return key


def _state_files(folder: Path, name: str) -> bool:
    return any((folder / f"{name}{suffix}").is_file() for suffix in (".json", ".pt"))


def _read_legacy(file: Path) -> Any:
    """A `.pt` file of an earlier version, through torch's weights-only unpickler (tensors, plain data and
    numpy arrays; any other object, and so any code, is refused)."""
    core = getattr(np, "_core", None) or np.core  # numpy 2 moved it
    allowed = [core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]
    try:
        with torch.serialization.safe_globals(allowed), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its note on the pickle protocol: the refusal below says enough
            return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # the unpickler's refusal, or a torn file
        reason = str(error).splitlines()[-1][:160] if str(error) else type(error).__name__
        raise RunDirError(f"{file} cannot be read as plain data (refused: {reason})") from None
