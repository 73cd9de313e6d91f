"""The adapter: a soft prompt and the parts its method adds (`methods/`), with the interface the adapter
model uses. The built-in methods' offset networks are in `offsets.py`."""

from __future__ import annotations

import torch
from torch import nn

from .config import MethodConfig
from .methods import get_method


class PromptAdapter(nn.Module):
    """Soft prompt (l x d) plus the parts its method adds (`PromptMethod.build_parts`). Holds every
    trainable tensor. The adapter interface the models use, shared with merged exports: `prompt_len`,
    `uses_positions`, `offsets(ids, embeds, positions)` and `prompt_rows()`."""

    def __init__(self, config: MethodConfig, dim: int):
        super().__init__()
        self.config = config
        self.method = get_method(config.method)
        self.prompt = nn.Parameter(torch.zeros(config.prompt_len, dim))
        for name, part in self.method.build_parts(config, dim).items():
            self.add_module(name, part)

    @property
    def prompt_len(self) -> int:
        return self.prompt.shape[0]

    @property
    def uses_positions(self) -> bool:
        """Whether `offsets` needs the content positions (DePT)."""
        return self.method.offsets_follow == "positions"

    def offsets(self, ids: torch.Tensor, embeds: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor | None:
        """What to add to the input embeddings `embeds` of `ids` (None: nothing)."""
        return self.method.offsets(self, ids, embeds, positions)

    def prompt_rows(self) -> torch.Tensor:
        """The l x d soft prompt as the model reads it."""
        return self.method.prompt_rows(self)
