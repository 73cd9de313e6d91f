"""`init_from`: start a prompt method from another run's (or a saved adapter's) trained prompt and offsets,
as the paper's few-shot protocol starts from a prompt trained on source tasks.

The source must be the same method on the same base model, with the same sizes: a different bottleneck
(ADePT) or rank / positions (DePT) is an error that names both values. A PT adapter (adept's, or a PEFT
prompt-tuning folder read as PT) starts any prompt method: its prompt, the run's other parts as a fresh
run starts them. A different prompt length is
an error too, unless `init_from_resize` allows it: `truncate` keeps the source's first l rows (source
longer), `repeat` tiles the source's rows to length l (either way).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import AdeptError
from ..hf import same_model
from ..prompt.adapter_files import (
    ADAPTER_WEIGHTS,
    AdapterError,
    BaseFacts,
    adapter_source,
    checked_adapter,
    load_adapter_state,
    read_adapter_config,
)
from ..prompt.config import ConfigError
from ..prompt.methods import config_from_dict
from ..prompt.model import PromptTunedModel
from .config import TrainConfig


class InitError(AdeptError, ValueError):
    """`init_from` names no adapter, or one that does not fit this run; the message says what differs."""


def initialize_from(model: PromptTunedModel, config: TrainConfig) -> Path:
    """Copy the source adapter's prompt and offsets into `model`; returns the adapter directory used."""
    try:
        directory = adapter_source(config.init_from).directory
    except AdapterError as error:
        raise InitError(f"init_from: {error}") from None
    where = f"init_from {directory}"
    try:
        metadata = read_adapter_config(directory)  # adept's own, or a PEFT prompt read as PT
    except AdapterError as error:
        raise InitError(f"init_from: {error}") from None
    # A PT adapter (adept's or PEFT's) starts any prompt method: its prompt, the run's other parts as
    # they start. Other adapters start runs of their own method.
    prompt_only = metadata["method"] == "pt" and config.method != "pt"
    if metadata["method"] != config.method and not prompt_only:
        raise InitError(f"{where} holds a {metadata['method']} adapter; this run trains {config.method}")
    recorded = metadata.get("base_model_name_or_path")
    if recorded and not same_model(recorded, config.model):
        raise InitError(f"{where} was trained on {recorded}; this run's model is {config.model}")
    if metadata["dim"] != model.dim:
        raise InitError(f"{where} has width {metadata['dim']}; {config.model} has {model.dim}")
    try:
        source = config_from_dict(metadata["method_config"])
    except (ConfigError, TypeError) as error:
        raise InitError(f"{where}: bad method_config: {error}") from None
    differ = [
        f"{name} {getattr(source, name)} (this run: {getattr(model.config, name)})"
        for name in ([] if prompt_only else model.adapter.method.shape_fields)
        if getattr(source, name) != getattr(model.config, name)
    ]
    if differ:
        raise InitError(f"{where}: the sizes differ: {'; '.join(differ)}; set them to the source's values")
    state = checked_adapter(directory, metadata, BaseFacts.of(model.base, config.model))[1]
    if "prompt" not in state:
        raise InitError(f"{where}: {ADAPTER_WEIGHTS} holds no prompt")
    state["prompt"] = _fitted_prompt(state["prompt"], model.prompt_len, config.init_from_resize, where)
    if prompt_only:
        state = {**model.adapter.state_dict(), "prompt": state["prompt"]}
    load_adapter_state(model.adapter, state, directory)
    return directory


def _fitted_prompt(prompt: torch.Tensor, length: int, resize: str | None, where: str) -> torch.Tensor:
    have = prompt.shape[0]
    if have == length:
        return prompt
    if resize is None:
        raise InitError(
            f"{where}: its prompt has {have} rows, this run's prompt_len is {length}; set prompt_len={have}, "
            f"or init_from_resize=truncate|repeat to fit it"
        )
    if resize == "truncate":
        if have < length:
            raise InitError(f"{where}: init_from_resize=truncate needs a longer source prompt ({have} < {length})")
        return prompt[:length].clone()
    return prompt.repeat((length + have - 1) // have, 1)[:length].clone()
