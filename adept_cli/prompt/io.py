"""Save and load adapters with their model (see `adapter_files.py` for the files themselves)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from .. import __version__
from ..environment import recorded_versions
from ..files import atomic_directory, sha256_file
from .adapter_files import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    FORMAT,
    FORMAT_VERSION,
    WEIGHTS_CHECKSUM,
    AdapterError,
    load_adapter_state,
    read_adapter_config,
    read_adapter_for,
)
from .model import PromptTunedModel


def adapter_metadata(model: PromptTunedModel) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library": "adept-cli",
        "library_version": __version__,
        "method": model.config.method,
        "method_config": model.config.to_dict(),
        "base_model_name_or_path": model.base_model_name,
        "model_kind": "seq2seq" if model.is_seq2seq else "causal",
        "model_type": getattr(model.base.config, "model_type", None),
        "dim": model.dim,
        "vocab_size": model.vocab_size,
        "prompt_len": model.prompt_len,
        "trainable_params": model.num_trainable_params(),
        "versions": recorded_versions(),
    }


def adapter_state_dict(model: PromptTunedModel) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().to("cpu").contiguous() for name, tensor in model.adapter.state_dict().items()}


def write_adapter(model: PromptTunedModel, directory: str | os.PathLike, extra: dict[str, Any] | None = None) -> None:
    """Write the two adapter files into `directory` (callers wanting atomicity pass a scratch directory)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(adapter_state_dict(model), str(directory / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    # the weights' checksum, checked whenever they are read: a bit flipped on disk is named, never used
    checksum = {WEIGHTS_CHECKSUM: sha256_file(directory / ADAPTER_WEIGHTS)}
    metadata = {**adapter_metadata(model), **(extra or {}), **checksum}
    (directory / ADAPTER_CONFIG).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")


def save_adapter(model: PromptTunedModel, directory: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
    """Save atomically: `directory` holds either the old adapter or the complete new one."""
    with atomic_directory(directory) as scratch:
        write_adapter(model, scratch, extra)
    return Path(directory)


def load_adapter(
    directory: str | os.PathLike,
    base: torch.nn.Module | None = None,
    base_model_name: str | None = None,
) -> PromptTunedModel:
    """Attach a saved adapter to `base` (loaded from the adapter's recorded base model when None)."""
    metadata = read_adapter_config(directory)
    name = base_model_name or metadata.get("base_model_name_or_path")
    if base is None:
        if not name:
            raise AdapterError(f"{Path(directory) / ADAPTER_CONFIG} names no base model; pass the model explicitly")
        from ..hf import load_model

        base = load_model(name)
    config, state = read_adapter_for(directory, base, name)
    model = PromptTunedModel(base, config, base_model_name=name, init_prompt=False)
    try:
        load_adapter_state(model.adapter, state, directory)
    except AdapterError:
        model.unwrap()
        raise
    return model.eval()
