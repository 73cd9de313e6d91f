"""Vanilla prompt tuning (Lester et al., 2021): a soft prompt of l tokens before the input, nothing else.

Count = l d. The only method PEFT's PROMPT_TUNING adapter can hold exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..config import ConfigError, MethodConfig
from .base import PromptMethod


@dataclass
class PromptTuningConfig(MethodConfig):
    """Vanilla prompt tuning (Lester et al., 2021): a soft prompt of l tokens, nothing else."""

    method: ClassVar[str] = "pt"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.prompt_len == 0:
            raise ConfigError("prompt_len must be at least 1 for prompt tuning (it is the only trainable part)")


class PromptTuning(PromptMethod):
    name = "pt"
    title = "PT"
    config_class = PromptTuningConfig
    exports = ("adept", "peft", "vllm")


METHOD = PromptTuning()
