"""Save and load adapters: `adapter_config.json` + `adapter_model.safetensors` (trainable tensors only)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from . import __version__
from .errors import AdeptError
from .methods import ConfigError, config_from_dict
from .model import PromptTunedModel, input_embedding, is_seq2seq

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
FORMAT = "adept-adapter"
FORMAT_VERSION = 1


class AdapterError(AdeptError, RuntimeError):
    """An adapter directory is missing, malformed or does not fit the model; the message names the file."""


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
    }


def adapter_state_dict(model: PromptTunedModel) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().to("cpu").contiguous() for name, tensor in model.adapter.state_dict().items()}


def write_adapter(model: PromptTunedModel, directory: str | os.PathLike, extra: dict[str, Any] | None = None) -> None:
    """Write the two adapter files into `directory` (callers wanting atomicity pass a scratch directory)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(adapter_state_dict(model), str(directory / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    metadata = {**adapter_metadata(model), **(extra or {})}
    (directory / ADAPTER_CONFIG).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")


def save_adapter(model: PromptTunedModel, directory: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
    """Save atomically: `directory` holds either the old adapter or the complete new one."""
    from .files import atomic_directory

    with atomic_directory(directory) as scratch:
        write_adapter(model, scratch, extra)
    return Path(directory)


def read_adapter_config(directory: str | os.PathLike) -> dict[str, Any]:
    path = Path(directory) / ADAPTER_CONFIG
    if not Path(directory).is_dir():
        raise AdapterError(f"adapter directory not found: {directory}")
    if not path.is_file():
        raise AdapterError(f"{path} is missing: an adapter directory holds {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS}")
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise AdapterError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise AdapterError(f'{path} is not an adept adapter config (expected "format": "{FORMAT}")')
    for field in ("method_config", "dim", "model_kind"):
        if field not in metadata:
            raise AdapterError(f"{path} has no {field!r} field")
    return metadata


def load_adapter(
    directory: str | os.PathLike,
    base: torch.nn.Module | None = None,
    base_model_name: str | None = None,
) -> PromptTunedModel:
    """Attach a saved adapter to `base` (loaded from the adapter's recorded base model when None)."""
    metadata = read_adapter_config(directory)
    config_path = Path(directory) / ADAPTER_CONFIG
    try:
        config = config_from_dict(metadata["method_config"])
    except (ConfigError, TypeError) as error:
        raise AdapterError(f"{config_path}: bad method_config: {error}") from error
    name = base_model_name or metadata.get("base_model_name_or_path")
    if base is None:
        if not name:
            raise AdapterError(f"{config_path} names no base model; pass the model explicitly")
        from .models import load_model

        base = load_model(name)
    kind = "seq2seq" if is_seq2seq(base) else "causal"
    if kind != metadata["model_kind"]:
        raise AdapterError(f"{config_path} is for a {metadata['model_kind']} model; {name or 'the model'} is {kind}")
    dim = input_embedding(base).weight.shape[1]
    if dim != metadata["dim"]:
        raise AdapterError(
            f"{config_path} was trained for embedding width {metadata['dim']}, "
            f"but {name or 'the model'} has width {dim}"
        )
    weights_path = Path(directory) / ADAPTER_WEIGHTS
    if not weights_path.is_file():
        raise AdapterError(f"{weights_path} is missing")
    state = load_file(str(weights_path))

    model = PromptTunedModel(base, config, base_model_name=name, init_prompt=False)
    expected = model.adapter.state_dict()
    problems = [f"missing {key}" for key in expected if key not in state]
    problems += [f"unexpected {key}" for key in state if key not in expected]
    problems += [
        f"{key} has shape {tuple(state[key].shape)}, expected {tuple(value.shape)}"
        for key, value in expected.items()
        if key in state and state[key].shape != value.shape
    ]
    if problems:
        model.unwrap()
        raise AdapterError(f"{weights_path} does not match {config_path}: {'; '.join(problems)}")
    model.adapter.load_state_dict(state)
    return model
