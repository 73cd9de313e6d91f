"""Full fine-tuning: every weight of the base trains (the upper reference of the paper's tables). Its
result is the whole model, saved as transformers saves it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from .base import TrainingMethod, save_pretrained


@dataclass
class FullSettings:
    """Full fine-tuning: no settings of its own (the learning rate is `lr`)."""

    method: ClassVar[str] = "full"

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method}


class Full(TrainingMethod):
    name = "full"
    title = "full fine-tuning"
    config_class = FullSettings
    trains_base_weights = True
    result = "the whole fine-tuned model"

    def build(
        self, settings: dict[str, Any], config: Any, base: Any, tokenizer: Any, source_length: int, init_prompt: bool
    ) -> Any:
        base.requires_grad_(True)
        return base

    def save(self, model: Any, directory: Path, evaluation: dict[str, Any]) -> None:
        save_pretrained(model, directory, evaluation)

    def restore(self, model: Any, directory: Path) -> None:
        from safetensors.torch import load_file

        state: dict[str, Any] = {}
        for shard in sorted(directory.glob("*.safetensors")):  # save_pretrained shards large models
            state.update(load_file(str(shard)))
        missing, unexpected = model.load_state_dict(state, strict=False)
        tied = set(getattr(model, "_tied_weights_keys", None) or [])
        if unexpected or [key for key in missing if key not in tied]:
            raise RuntimeError(
                f"{directory} does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )

    def load(self, directory: Path, model_name: str, dtype: Any, quantization: str | None, device: Any) -> Any:
        from transformers import AutoConfig

        from ...hf import auto_model_class

        loader = auto_model_class(AutoConfig.from_pretrained(directory))
        kwargs = {"dtype": dtype} if dtype is not None else {}
        return loader.from_pretrained(directory, **kwargs).eval()


METHOD = Full()
