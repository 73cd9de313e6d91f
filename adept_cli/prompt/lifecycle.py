"""How every prompt method (PT, DePT, ADePT, or one registered later) trains and ships: the adapter model
it builds, its optimizer groups, and the adept adapter its result is saved as, restored from and loaded
from. The same interface as a `TrainingMethod`'s own (LoRA and full fine-tuning bring theirs), asked
through `training.trainable`; what differs between prompt methods is asked of the method itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..hf import is_seq2seq, load_model
from .adapter_files import ADAPTER_WEIGHTS, EVALUATION_KEY, read_weights
from .io import load_adapter, write_adapter
from .methods import PromptMethod, method_config
from .model import PromptTunedModel


class PromptLifecycle:
    def __init__(self, method: PromptMethod):
        self.method = method

    def build(
        self, settings: dict[str, Any], config: Any, base: Any, tokenizer: Any, source_length: int, init_prompt: bool
    ) -> PromptTunedModel:
        """`settings`: the run's settings for the method (unset ones left out)."""
        # every content position an input can have (DePT's s): the source, and a causal input's target
        positions = source_length if is_seq2seq(base) else source_length + config.max_target_length
        return PromptTunedModel(
            base,
            method_config(self.method.name, **self.method.settings_for_inputs(settings, positions)),
            tokenizer,
            base_model_name=config.model,
            init_prompt=init_prompt,
            share_prompt=config.share_prompt or "auto",
        )

    def trainable_groups(self, model: PromptTunedModel) -> dict[str, list[Any]]:
        return self.method.parameter_groups(model.adapter)

    def save(self, model: PromptTunedModel, directory: Path, evaluation: dict[str, Any]) -> None:
        write_adapter(model, directory, {EVALUATION_KEY: evaluation})

    def restore(self, model: PromptTunedModel, directory: Path) -> None:
        model.adapter.load_state_dict(read_weights(directory / ADAPTER_WEIGHTS))

    def load(self, directory: Path, model_name: str, dtype: Any, quantization: str | None, device: Any) -> Any:
        base = load_model(model_name, dtype, quantization, device)
        return load_adapter(directory, base=base, base_model_name=model_name)
