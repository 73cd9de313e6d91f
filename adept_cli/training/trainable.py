"""What differs between methods in training, asked of each method in the registry
(`adept_cli.prompt.methods`): building the trainable model, its optimizer groups, and saving / restoring
its trained result. The loop itself is the same for every method.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import AdeptError
from ..prompt.adapter_files import AdapterError
from ..prompt.lifecycle import PromptLifecycle
from ..prompt.methods import get_method, settings_of
from ..prompt.model import DEFAULT_ADAPTER
from .config import TrainConfig


def lifecycle(method: str) -> Any:
    """What builds, saves and loads a method's model: the prompt methods' shared one, else the method's own."""
    chosen = get_method(method)
    return PromptLifecycle(chosen) if chosen.uses_prompt else chosen


def build_model(config: TrainConfig, base: Any, tokenizer: Any, source_length: int, init_prompt: bool = True) -> Any:
    """The base model made trainable by `config.method` (the base stays frozen for adapters); without
    `init_prompt` the prompt keeps its random start (the memory plan traces a base with no weights)."""
    return lifecycle(config.method).build(settings_of(config), config, base, tokenizer, source_length, init_prompt)


def parameter_groups(model: Any, config: TrainConfig) -> list[dict[str, Any]]:
    """One optimizer group per learning rate the method names (two for DePT / ADePT: the soft prompt and
    the offset network), empty groups left out."""
    method = get_method(config.method)
    tensors = lifecycle(config.method).trainable_groups(model)
    groups = [
        {"params": tensors[name], "lr": getattr(config, setting), "name": name}
        for name, setting in method.learning_rates.items()
        if tensors.get(name)
    ]
    return [group for group in groups if sum(p.numel() for p in group["params"])]


def trainable_state(model: Any) -> dict[str, torch.Tensor]:
    """Every tensor that trains, by parameter name: what a checkpoint holds (never the frozen base)."""
    return {name: p.detach().to("cpu").clone() for name, p in model.named_parameters() if p.requires_grad}


# Checkpoints written before one adapter model held every adapter name the prompt adapter's tensors
# `...embed_tokens.adapter.prompt`; they are `...embed_tokens.adapters.default.prompt` now.
LEGACY_ADAPTER_PATH = (".adapter.", f".adapters.{DEFAULT_ADAPTER}.")


def load_trainable_state(model: Any, state: dict[str, torch.Tensor], where: str) -> None:
    parameters = {name: p for name, p in model.named_parameters() if p.requires_grad}
    old, new = LEGACY_ADAPTER_PATH
    state = {key.replace(old, new, 1) if key not in parameters else key: value for key, value in state.items()}
    missing = sorted(set(parameters) - set(state))
    unexpected = sorted(set(state) - set(parameters))
    if missing or unexpected:
        raise RuntimeError(f"{where} does not fit this model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    with torch.no_grad():
        for name, parameter in parameters.items():
            parameter.copy_(state[name].to(parameter.device, parameter.dtype))


def save_trained(model: Any, method: str, directory: Path, evaluation: dict[str, Any]) -> None:
    """The deployable result (an adept adapter, a PEFT LoRA adapter, the whole fine-tuned model, ...),
    with the settings evaluation needs."""
    lifecycle(method).save(model, directory, evaluation)


def restore_trained(model: Any, method: str, directory: Path) -> None:
    """Load the result `save_trained` wrote into the live `model` (same method and base)."""
    lifecycle(method).restore(model, directory)


def load_trained(
    method: str,
    directory: Path,
    model_name: str,
    dtype: Any = None,
    quantization: str | None = None,
    device: Any = None,
) -> Any:
    """A fresh model with the trained result of `directory`, for evaluation or export; `quantization`
    loads the base as a quantized run trained it."""
    if get_method(method).uses_prompt:
        return lifecycle(method).load(directory, model_name, dtype, quantization, device)
    try:
        return lifecycle(method).load(directory, model_name, dtype, quantization, device)
    except AdeptError:
        raise
    except Exception as error:  # peft, transformers and safetensors each fail their own way on damaged files
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise AdapterError(f"{directory} could not be loaded as a {method} result: {reason}") from None
