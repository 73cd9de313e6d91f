"""LoRA (Hu et al., 2022) through PEFT: low-rank updates of the base's linear layers, the paper's
parameter-efficient baseline. Its result is a PEFT LoRA adapter (`best/`), loaded with `PeftModel`."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..config import ConfigError, help_field, require_int
from .base import TrainingMethod, save_pretrained


@dataclass
class LoraSettings:
    """LoRA: low-rank updates of the base's linear layers (PEFT)."""

    method: ClassVar[str] = "lora"

    # the paper's decoder-only baseline rank, PEFT's usual alpha and dropout
    lora_rank: int = help_field("rank", default=16)
    lora_alpha: int = help_field("scaling alpha", default=32)
    lora_dropout: float = help_field("dropout", default=0.05)
    lora_target_modules: list[str] | None = help_field(
        "target modules (default: PEFT's choice for the model)", default=None
    )

    def __post_init__(self) -> None:
        require_int("lora_rank", self.lora_rank, minimum=1)
        require_int("lora_alpha", self.lora_alpha, minimum=1)
        if not isinstance(self.lora_dropout, (int, float)) or not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"lora_dropout must be in [0, 1); got {self.lora_dropout}")

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, **asdict(self)}


class Lora(TrainingMethod):
    name = "lora"
    title = "LoRA"
    config_class = LoraSettings
    settings = ("lora_rank", "lora_alpha", "lora_dropout", "lora_target_modules")
    engines = ()
    result = "a PEFT LoRA adapter"

    def build(
        self, settings: dict[str, Any], config: Any, base: Any, tokenizer: Any, source_length: int, init_prompt: bool
    ) -> Any:
        from peft import LoraConfig, TaskType, get_peft_model

        from ...hf import hub_name, is_seq2seq

        chosen = LoraSettings(**settings)
        lora = LoraConfig(
            r=chosen.lora_rank,
            lora_alpha=chosen.lora_alpha,
            lora_dropout=chosen.lora_dropout,
            target_modules=chosen.lora_target_modules,
            task_type=TaskType.SEQ_2_SEQ_LM if is_seq2seq(base) else TaskType.CAUSAL_LM,
        )
        model = get_peft_model(base, lora)
        # name the base as users load it (the embedded model's hub id, not its local GGUF folder)
        model.peft_config["default"].base_model_name_or_path = hub_name(config.model)
        return model

    def save(self, model: Any, directory: Path, evaluation: dict[str, Any]) -> None:
        save_pretrained(model, directory, evaluation)

    def restore(self, model: Any, directory: Path) -> None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(model, load_file(str(directory / "adapter_model.safetensors")))

    def load(self, directory: Path, model_name: str, dtype: Any, quantization: str | None, device: Any) -> Any:
        from peft import PeftModel

        from ...hf import load_model

        return PeftModel.from_pretrained(load_model(model_name, dtype, quantization, device), directory).eval()


METHOD = Lora()
