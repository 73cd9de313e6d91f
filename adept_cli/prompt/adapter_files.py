"""Adapter files on disk, read without building a model: `adapter_config.json` + `adapter_model.safetensors`
(trainable tensors only), merged exports, and THE resolver of "a run or an adapter" (`adapter_source`).

The config carries `format_version` (checked on load), the method config, the base model, the versions it
was made under, and, for adapters written by `adept train`, the settings evaluation needs (`evaluation`:
task, template, lengths, scoring), so that a copied adapter scores exactly as its run did.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from ..errors import AdeptError, AdeptWarning
from ..files import read_json_object, sha256_file
from ..hf import context_limit, input_embedding, is_seq2seq, same_model
from ..run_dir import RunDir
from .adapter import PromptAdapter
from .budget import resolve_sizes
from .config import EVALUATION_FILE, ConfigError, MethodConfig
from .methods import config_from_dict

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
FORMAT = "adept-adapter"
FORMAT_VERSION = 1
EVALUATION_KEY = "evaluation"  # in adapter_config.json
WEIGHTS_CHECKSUM = "weights_sha256"  # in adapter_config.json: the sha256 of adapter_model.safetensors
# PEFT's PROMPT_TUNING adapters are read as what they are, a PT adapter (a soft prompt and nothing else):
# `num_virtual_tokens` rows of `prompt_embeddings` (a seq2seq adapter may hold a second block for the
# decoder, which PEFT's prompt tuning does not use).
PEFT_PROMPT_KEY = "prompt_embeddings"
PEFT_TASKS = {"CAUSAL_LM": "causal", "SEQ_2_SEQ_LM": "seq2seq"}
MERGED_PROMPT_FOLDER = "prompt"  # a merged export's PEFT prompt adapter (see merged.py)


class AdapterError(AdeptError, RuntimeError):
    """An adapter directory is missing, malformed or does not fit the model; the message names the file."""


def read_adapter_config(directory: str | os.PathLike) -> dict[str, Any]:
    path = Path(directory) / ADAPTER_CONFIG
    if not Path(directory).is_dir():
        raise AdapterError(f"adapter directory not found: {directory}")
    if not path.is_file():
        raise AdapterError(f"{path} is missing: an adapter directory holds {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS}")
    metadata = read_json_object(path, AdapterError, "an adapter config")
    if metadata.get("format") != FORMAT and "peft_type" in metadata:
        return peft_prompt_config(metadata, path)
    return checked_adapter_config(metadata, path)


def peft_prompt_config(peft: dict[str, Any], path: Path) -> dict[str, Any]:
    """A PEFT PROMPT_TUNING adapter's config as adept's own describes a PT adapter (`peft_prompt_rows`: the
    rows its weights hold); any other PEFT type is one AdapterError saying which types are read."""
    kind = peft.get("peft_type")
    if kind != "PROMPT_TUNING":
        raise AdapterError(
            f"{path.parent} is a PEFT {kind} adapter; adept reads PEFT's PROMPT_TUNING adapters (a soft prompt, "
            f"served and trained on as a PT adapter) and its own. A {kind} adapter cannot join a batch of prompt "
            "adapters (prefix tuning adds keys to every layer, P-tuning runs a prompt encoder, LoRA changes "
            "weights): load it with PEFT (adept eval / predict --adapter do)"
        )
    task = peft.get("task_type")
    if task not in PEFT_TASKS:
        raise AdapterError(f"{path}: task_type {task!r}; adept reads prompt tuning of {', '.join(PEFT_TASKS)} models")
    sizes = {name: peft.get(name) for name in ("num_virtual_tokens", "token_dim")}
    sizes["num_transformer_submodules"] = peft.get("num_transformer_submodules") or 1
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise AdapterError(f"{path}: {name} must be a positive integer; got {value!r}")
    return {
        "method": "pt",
        "method_config": {"method": "pt", "prompt_len": sizes["num_virtual_tokens"]},
        "dim": sizes["token_dim"],
        "model_kind": PEFT_TASKS[task],
        "base_model_name_or_path": peft.get("base_model_name_or_path"),
        "peft_prompt_rows": sizes["num_virtual_tokens"] * sizes["num_transformer_submodules"],
    }


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


@dataclass(frozen=True)
class BaseFacts:
    """What an adapter must fit in a base model: its kind, embedding width, vocabulary and positions."""

    name: str
    kind: str  # causal | seq2seq
    dim: int
    vocab: int
    positions: int  # the most positions it takes (hf.context_limit)

    @classmethod
    def of(cls, base: Any, name: str | None = None) -> BaseFacts:
        table = input_embedding(base).weight
        kind = "seq2seq" if is_seq2seq(base) else "causal"
        return cls(name or "the model", kind, int(table.shape[1]), int(table.shape[0]), context_limit(base, None))

    @property
    def largest_adapter(self) -> int:
        """The most numbers an adapter may hold: as many as the base's embedding table and a prompt as long
        as its context (a prompt adapter is a few hundredths of a percent of that)."""
        return (self.vocab + self.positions) * self.dim


def read_adapter_for(
    directory: str | os.PathLike, base: torch.nn.Module, name: str | None = None
) -> tuple[MethodConfig, dict[str, torch.Tensor]]:
    """The method config (sizes resolved) and tensors of a saved adapter, checked against `base`."""
    metadata = read_adapter_config(directory)
    return checked_adapter(directory, metadata, BaseFacts.of(base, name or metadata.get("base_model_name_or_path")))


def checked_adapter(
    directory: str | os.PathLike, metadata: dict[str, Any], base: BaseFacts
) -> tuple[MethodConfig, dict[str, torch.Tensor]]:
    """An adapter's config and tensors, refused (one AdapterError naming the file and field) where `base`
    cannot hold it, before anything of its size is allocated: the kind and width it was made for, a
    prompt that leaves room for an input, weights that hold exactly the numbers its config describes (read
    from the file's header first), floating-point tensors, and no NaN or infinity."""
    config_path, weights = Path(directory) / ADAPTER_CONFIG, Path(directory) / ADAPTER_WEIGHTS
    try:
        config = config_from_dict(metadata["method_config"])
    except (ConfigError, TypeError) as error:
        raise AdapterError(f"{config_path}: bad method_config: {error}") from None
    if base.kind != metadata["model_kind"]:
        raise AdapterError(f"{config_path} is for a {metadata['model_kind']} model; {base.name} is {base.kind}")
    peft_rows = metadata.get("peft_prompt_rows")
    recorded = metadata.get("base_model_name_or_path")
    if peft_rows and recorded and not same_model(recorded, base.name):  # a soft prompt fits one base's embeddings
        raise AdapterError(f"{config_path} is a PEFT prompt for {recorded}; the model here is {base.name}")
    if base.dim != metadata["dim"]:
        raise AdapterError(
            f"{config_path} was trained for embedding width {metadata['dim']}, but {base.name} has width {base.dim}"
        )
    if config.prompt_len > base.positions - 2:
        raise AdapterError(
            f"{config_path}: method_config.prompt_len {config.prompt_len} leaves no room for an input in the "
            f"{base.positions} positions {base.name} takes (at most {base.positions - 2})"
        )
    try:
        config = resolve_sizes(config, base.dim)
        with torch.device("meta"):  # the adapter's shapes, nothing allocated whatever size its config asks for
            shapes = {key: tuple(value.shape) for key, value in PromptAdapter(config, base.dim).state_dict().items()}
    except AdeptError as error:
        raise AdapterError(f"{config_path}: bad method_config: {error}") from None
    expected = sum(math.prod(shape) for shape in shapes.values())
    if expected > base.largest_adapter:
        raise AdapterError(
            f"{config_path}: method_config describes {expected:,} numbers, more than {base.name} can use "
            f"({base.largest_adapter:,}: its embedding table and a prompt as long as its context)"
        )
    if not weights.is_file():
        raise AdapterError(f"{weights} is missing")
    verify_weights(weights)
    stored, described = _stored_numbers(weights), peft_rows * base.dim if peft_rows else expected
    if stored != described:  # read from the header: a file of the wrong size is refused before it is read
        raise AdapterError(f"{weights} holds {stored:,} numbers; {config_path} describes {described:,}")
    tensors = read_weights(weights, verify=False)
    if peft_rows:
        if set(tensors) != {PEFT_PROMPT_KEY}:
            raise AdapterError(
                f"{weights}: a PEFT prompt-tuning adapter holds {PEFT_PROMPT_KEY} alone; found {sorted(tensors)}"
            )
        tensors = {"prompt": tensors[PEFT_PROMPT_KEY][: config.prompt_len].contiguous()}
    bad = sorted(key for key, tensor in tensors.items() if not torch.isfinite(tensor).all())
    if bad:
        raise AdapterError(f"{weights}: {', '.join(bad)} hold NaN or infinite values; retrain, or restore the file")
    return config, tensors


FLOATING = ("F16", "BF16", "F32", "F64")


def _stored_numbers(weights: Path) -> int:
    """How many numbers a safetensors file holds, from its header alone; tensors that are not floating
    point are refused."""
    from safetensors import safe_open

    total = 0
    try:
        with safe_open(str(weights), "pt") as handle:
            for key in handle.keys():
                part = handle.get_slice(key)
                if part.get_dtype() not in FLOATING:
                    raise AdapterError(f"{weights}: {key} holds {part.get_dtype()} values; an adapter holds floats")
                total += math.prod(part.get_shape())
    except AdapterError:
        raise
    except Exception as error:  # safetensors raises its own error types for a damaged header
        raise AdapterError(f"{weights} is damaged or not a safetensors file ({str(error)[:120]})") from None
    return total


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


def read_weights(path: Path, verify: bool = True) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, checked first against the checksum its adapter_config.json
    records (`verify_weights`); a missing, truncated or corrupt file is one AdapterError."""
    if not path.is_file():
        raise AdapterError(f"{path} is missing")
    if verify:
        verify_weights(path)
    try:
        return load_file(str(path))
    except Exception as error:  # safetensors raises its own error types for a damaged header or body
        raise AdapterError(f"{path} is damaged or not a safetensors file ({str(error)[:120]})") from None


def verify_weights(path: Path) -> None:
    """Check `path` against the sha256 its adapter_config.json records: a file changed or damaged since it
    was written is one AdapterError; an adept adapter that records no checksum gets an AdeptWarning naming
    it (PEFT records none: a merged export's prompt is read as it is)."""
    config = path.parent / ADAPTER_CONFIG
    if not config.is_file():
        return
    metadata = read_json_object(config, AdapterError, "an adapter config")
    recorded = metadata.get(WEIGHTS_CHECKSUM)
    if recorded is None and metadata.get("format") != FORMAT:
        return
    if recorded is None:
        warnings.warn(
            AdeptWarning(
                f"{config} records no {WEIGHTS_CHECKSUM}, so {path} cannot be verified (an adapter of an earlier "
                "version, or the field removed); using it as it is"
            ),
            stacklevel=3,
        )
    elif not isinstance(recorded, str) or not re.fullmatch(r"[0-9a-f]{64}", recorded):
        raise AdapterError(f"{config}: {WEIGHTS_CHECKSUM} is not a sha256 digest; the adapter cannot be verified")
    elif sha256_file(path) != recorded:
        raise AdapterError(
            f"{path} does not match the checksum {config.name} records for it: changed or damaged on disk since "
            "it was written; retrain, or restore the file"
        )


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
        metadata = read_adapter_config(directory)  # adept's own, or PEFT prompt tuning read as PT
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
