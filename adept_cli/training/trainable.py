"""What differs between methods in training: building the trainable model, its optimizer groups, and
saving / restoring its trained weights. PT, DePT and ADePT use `PromptTunedModel`; `lora` goes through
the `peft` library; `full` trains every weight. The loop itself is the same for all five.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from ..errors import AdeptError
from ..files import write_json_atomic
from ..hf import auto_model_class, hub_name, is_seq2seq, load_model
from ..prompt.adapter_files import ADAPTER_WEIGHTS, EVALUATION_FILE, EVALUATION_KEY, AdapterError, read_weights
from ..prompt.io import load_adapter, write_adapter
from ..prompt.methods import get_method, method_config, method_names
from ..prompt.model import DEFAULT_ADAPTER, PromptTunedModel
from .config import TrainConfig, method_settings

# LoRA's defaults: the paper's decoder-only baseline rank, PEFT's usual alpha and dropout.
LORA_DEFAULTS = {"lora_rank": 16, "lora_alpha": 32, "lora_dropout": 0.05}


def content_positions_of_inputs(config: TrainConfig, source_length: int, seq2seq: bool) -> int:
    """Every content position an input can have (DePT's s): the source, and the target for causal inputs."""
    return source_length if seq2seq else source_length + config.max_target_length


def build_model(config: TrainConfig, base: Any, tokenizer: Any, source_length: int, init_prompt: bool = True) -> Any:
    """The base model made trainable by `config.method` (the base stays frozen for adapters); without
    `init_prompt` the prompt keeps its random start (the memory plan traces a base with no weights)."""
    if config.uses_prompt:
        positions = content_positions_of_inputs(config, source_length, is_seq2seq(base))
        settings = get_method(config.method).settings_for_inputs(method_settings(config), positions)
        return PromptTunedModel(
            base,
            method_config(config.method, **settings),
            tokenizer,
            base_model_name=config.model,
            init_prompt=init_prompt,
            share_prompt=config.share_prompt or "auto",
        )
    if config.method == "lora":
        from peft import LoraConfig, TaskType, get_peft_model

        def setting(name: str) -> Any:
            value = getattr(config, name)
            return LORA_DEFAULTS[name] if value is None else value

        lora = LoraConfig(
            r=setting("lora_rank"),
            lora_alpha=setting("lora_alpha"),
            lora_dropout=setting("lora_dropout"),
            target_modules=config.lora_target_modules,
            task_type=TaskType.SEQ_2_SEQ_LM if is_seq2seq(base) else TaskType.CAUSAL_LM,
        )
        model = get_peft_model(base, lora)
        # name the base as users load it (the embedded model's hub id, not its local GGUF folder)
        model.peft_config["default"].base_model_name_or_path = hub_name(config.model)
        return model
    base.requires_grad_(True)
    return base


def parameter_groups(model: Any, config: TrainConfig) -> list[dict[str, Any]]:
    """Two learning rates for prompt methods (soft prompt; offset network), one otherwise."""
    if isinstance(model, PromptTunedModel):
        rates = {"prompt": config.lr_prompt, "offsets": config.lr_offsets}
        tensors = model.adapter.method.parameter_groups(model.adapter)
        groups = [{"params": tensors[name], "lr": rates[name], "name": name} for name in rates if tensors.get(name)]
        return [g for g in groups if g["params"][0].numel()]
    return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": config.lr, "name": "weights"}]


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


def save_trained(model: Any, directory: Path, evaluation: dict[str, Any]) -> None:
    """The deployable result: an adept adapter, a PEFT LoRA adapter, or the whole fine-tuned model, with
    the settings evaluation needs (in the adept adapter's config, else in a file beside the weights)."""
    if isinstance(model, PromptTunedModel):
        write_adapter(model, directory, {EVALUATION_KEY: evaluation})
    else:
        model.save_pretrained(directory, safe_serialization=True)
        write_json_atomic(directory / EVALUATION_FILE, evaluation)


def restore_trained(model: Any, directory: Path) -> None:
    """Load the weights `save_trained` wrote into the live `model` (same method and base)."""
    if isinstance(model, PromptTunedModel):
        model.adapter.load_state_dict(read_weights(directory / ADAPTER_WEIGHTS))
        return
    from peft import PeftModel

    if isinstance(model, PeftModel):
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(str(directory / "adapter_model.safetensors")))
        return
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(directory.glob("*.safetensors")):  # save_pretrained shards large models
        state.update(load_file(str(shard)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    if unexpected or [key for key in missing if key not in tied]:
        raise RuntimeError(f"{directory} does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")


def load_trained(
    method: str,
    directory: Path,
    model_name: str,
    dtype: Any = None,
    quantization: str | None = None,
    device: Any = None,
) -> Any:
    """A fresh model with the trained weights of `directory`, for evaluation or export; `quantization`
    loads the base as a quantized run trained it."""
    if method in method_names():
        base = load_model(model_name, dtype, quantization, device)
        return load_adapter(directory, base=base, base_model_name=model_name)
    try:
        if method == "lora":
            from peft import PeftModel

            return PeftModel.from_pretrained(load_model(model_name, dtype, quantization, device), directory).eval()
        from transformers import AutoConfig

        loader = auto_model_class(AutoConfig.from_pretrained(directory))
        kwargs = {"dtype": dtype} if dtype is not None else {}
        return loader.from_pretrained(directory, **kwargs).eval()
    except AdeptError:
        raise
    except Exception as error:  # peft, transformers and safetensors each fail their own way on damaged files
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise AdapterError(f"{directory} could not be loaded as a {method} result: {reason}") from None
