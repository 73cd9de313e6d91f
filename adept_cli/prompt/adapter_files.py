"""Adapter files on disk, read without building a model: `adapter_config.json` + `adapter_model.safetensors`
(trainable tensors only), merged exports, and THE resolver of "a run or an adapter" (`adapter_source`).

The config carries `format_version` (checked on load), the method config, the base model, the versions it
was made under, and, for adapters written by `adept train`, the settings evaluation needs (`evaluation`:
task, template, lengths, scoring), so that a copied adapter scores exactly as its run did.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from ..errors import AdeptError
from ..files import read_json_object, sha256_file
from ..hf import input_embedding, is_seq2seq
from ..run_dir import RunDir
from .config import ConfigError, MethodConfig
from .methods import config_from_dict

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
FORMAT = "adept-adapter"
FORMAT_VERSION = 1
EVALUATION_KEY = "evaluation"  # in adapter_config.json
WEIGHTS_CHECKSUM = "weights_sha256"  # in adapter_config.json: the sha256 of adapter_model.safetensors
EVALUATION_FILE = "adept_evaluation.json"  # the same settings beside a PEFT adapter or a full model
MERGED_PROMPT_FOLDER = "prompt"  # a merged export's PEFT prompt adapter (see merged.py)


class AdapterError(AdeptError, RuntimeError):
    """An adapter directory is missing, malformed or does not fit the model; the message names the file."""


def read_adapter_config(directory: str | os.PathLike) -> dict[str, Any]:
    path = Path(directory) / ADAPTER_CONFIG
    if not Path(directory).is_dir():
        raise AdapterError(f"adapter directory not found: {directory}")
    if not path.is_file():
        raise AdapterError(f"{path} is missing: an adapter directory holds {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS}")
    return checked_adapter_config(read_json_object(path, AdapterError, "an adapter config"), path)


def checked_adapter_config(metadata: dict[str, Any], path: Path) -> dict[str, Any]:
    """`metadata` read from `path`, checked to be an adept adapter config this version reads."""
    if metadata.get("format") != FORMAT:
        raise AdapterError(f'{path} is not an adept adapter config (expected "format": "{FORMAT}")')
    version = metadata.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise AdapterError(f"{path}: format_version must be a positive integer; got {version!r}")
    if version > FORMAT_VERSION:
        raise AdapterError(
            f"{path} has format_version {version}, newer than this adept reads ({FORMAT_VERSION}); "
            "upgrade adept-cli (pip install -U adept-cli)"
        )
    for field in ("method_config", "dim", "model_kind"):
        if field not in metadata:
            raise AdapterError(f"{path} has no {field!r} field")
    return metadata


def read_adapter_for(
    directory: str | os.PathLike, base: torch.nn.Module, name: str | None = None
) -> tuple[MethodConfig, dict[str, torch.Tensor]]:
    """The method config and tensors of a saved adapter, checked against `base` (kind and width)."""
    metadata = read_adapter_config(directory)
    config_path = Path(directory) / ADAPTER_CONFIG
    try:
        config = config_from_dict(metadata["method_config"])
    except (ConfigError, TypeError) as error:
        raise AdapterError(f"{config_path}: bad method_config: {error}") from None
    shown = name or metadata.get("base_model_name_or_path") or "the model"
    kind = "seq2seq" if is_seq2seq(base) else "causal"
    if kind != metadata["model_kind"]:
        raise AdapterError(f"{config_path} is for a {metadata['model_kind']} model; {shown} is {kind}")
    dim = input_embedding(base).weight.shape[1]
    if dim != metadata["dim"]:
        raise AdapterError(
            f"{config_path} was trained for embedding width {metadata['dim']}, but {shown} has width {dim}"
        )
    return config, read_weights(Path(directory) / ADAPTER_WEIGHTS)


def load_adapter_state(adapter: torch.nn.Module, state: dict[str, torch.Tensor], directory: str | os.PathLike) -> None:
    """Copy saved tensors into `adapter`; missing, unexpected or misshapen tensors are one AdapterError."""
    expected = adapter.state_dict()
    problems = [f"missing {key}" for key in expected if key not in state]
    problems += [f"unexpected {key}" for key in state if key not in expected]
    problems += [
        f"{key} has shape {tuple(state[key].shape)}, expected {tuple(value.shape)}"
        for key, value in expected.items()
        if key in state and state[key].shape != value.shape
    ]
    if problems:
        weights, config = Path(directory) / ADAPTER_WEIGHTS, Path(directory) / ADAPTER_CONFIG
        raise AdapterError(f"{weights} does not match {config}: {'; '.join(problems)}")
    adapter.load_state_dict(state)


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; a missing, truncated or corrupt file, or one that no longer matches
    the checksum its adapter_config.json records, is one AdapterError."""
    if not path.is_file():
        raise AdapterError(f"{path} is missing")
    try:
        tensors = load_file(str(path))
    except Exception as error:  # safetensors raises its own error types for a damaged header or body
        raise AdapterError(f"{path} is damaged or not a safetensors file ({str(error)[:120]})") from None
    config = path.parent / ADAPTER_CONFIG
    recorded = None
    if config.is_file():
        recorded = read_json_object(config, AdapterError, "an adapter config").get(WEIGHTS_CHECKSUM)
    if recorded is not None and sha256_file(path) != recorded:
        raise AdapterError(
            f"{path} does not match the checksum {config.name} records for it: changed or damaged on disk since "
            "it was written; retrain, or restore the file"
        )
    return tensors


def read_evaluation_settings(directory: str | os.PathLike) -> dict[str, Any]:
    """The evaluation settings an adapter (or a PEFT / full-model folder) was saved with; {} if none."""
    directory = Path(directory)
    config_path, sidecar = directory / ADAPTER_CONFIG, directory / EVALUATION_FILE
    if sidecar.is_file():
        return read_json_object(sidecar, AdapterError, "evaluation settings")
    if not config_path.is_file():
        return {}
    settings = read_json_object(config_path, AdapterError, "an adapter config").get(EVALUATION_KEY, {})
    if not isinstance(settings, dict):
        raise AdapterError(f"{config_path}: {EVALUATION_KEY!r} must be a JSON object")
    return settings


def is_merged_export(directory: str | os.PathLike) -> bool:
    """A merged export (`adept export --format merged`): a whole model folder with its prompt beside it."""
    directory = Path(directory)
    return (directory / "config.json").is_file() and (directory / MERGED_PROMPT_FOLDER / ADAPTER_CONFIG).is_file()


@dataclass(frozen=True)
class AdapterSource:
    """Where a prompt adapter's files are and what it was trained with, read without loading a model."""

    directory: Path  # holds adapter_config.json + weights (or a merged export)
    method: str  # a prompt method, or "merged"
    base_model: str | None  # None for a merged export, which holds its own copy of the base
    evaluation: dict[str, Any]  # task, scoring, max_length, max_target_length, split_seed (as recorded)


def adapter_source(path: str | os.PathLike) -> AdapterSource:
    """THE resolver of "a run or an adapter": a run directory (its best adapter), an adept adapter
    directory, or a merged export; anything else is one AdapterError saying what it is instead."""
    path = Path(path)
    run = RunDir(path)
    directory = run.best if run.holds_a_run() else path
    if run.holds_a_run() and not directory.is_dir():
        raise AdapterError(f"{directory} not found: the run has not finished an evaluation yet")
    config_path = directory / ADAPTER_CONFIG
    if config_path.is_file():
        if read_json_object(config_path, AdapterError, "an adapter config").get("format") != FORMAT:
            raise AdapterError(
                f"{directory} is a PEFT adapter, not an adept prompt adapter (PT, DePT, ADePT): prompt adapters "
                "share a batch over one frozen base and start other runs; export the run with --format adept"
            )
        metadata = read_adapter_config(directory)
        base = metadata.get("base_model_name_or_path")
        return AdapterSource(directory, metadata["method"], base, read_evaluation_settings(directory))
    if is_merged_export(directory):
        # The export holds a whole copy of the base; over the original base it is a prompt and a per-token
        # offset table (see merged.py). The original base is not recorded: the caller names it.
        return AdapterSource(directory, "merged", None, read_evaluation_settings(directory))
    if run.holds_a_run():
        raise AdapterError(f"{run.path} holds no prompt adapter ({directory} is a fully fine-tuned model)")
    if not path.exists():
        raise AdapterError(f"{path}: no such run or adapter directory")
    raise AdapterError(f"{path} is neither a run directory (config.yaml) nor an adapter ({ADAPTER_CONFIG})")
