"""The trainable modules: the adapter (a soft prompt and its method's parts), and the offset networks the
built-in methods use (ADePT's token-shared FFN, DePT's low-rank position table).

Init follows the reference code: the offsets are exactly zero at the start (ADePT's W_up, b1, b2 and
DePT's B are zero), so every method starts as plain prompt tuning.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import MethodConfig


def _uniform_fan_in(tensor: torch.Tensor) -> None:
    # kaiming_uniform(a=sqrt(5)) on a (rows x r) tensor: bound 1/sqrt(r), as the reference code.
    nn.init.kaiming_uniform_(tensor, a=math.sqrt(5))


class TokenOffsets(nn.Module):
    """ADePT's offset network f(e) = ReLU(e W_down + b1) W_up + b2, shared by every token."""

    def __init__(self, dim: int, bottleneck: int, dropout: float = 0.0):
        super().__init__()
        self.down = nn.Parameter(torch.empty(dim, bottleneck))
        self.down_bias = nn.Parameter(torch.zeros(bottleneck))
        self.up = nn.Parameter(torch.zeros(bottleneck, dim))
        self.up_bias = nn.Parameter(torch.zeros(dim))
        self.dropout = nn.Dropout(dropout)
        _uniform_fan_in(self.down)

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu(embeds @ self.down + self.down_bias)
        return self.dropout(hidden) @ self.up + self.up_bias


class PositionOffsets(nn.Module):
    """DePT's offsets A B: row i of A B is added to the token at content position i (0 <= i < s)."""

    def __init__(self, dim: int, rank: int, max_length: int):
        super().__init__()
        self.a = nn.Parameter(torch.empty(max_length, rank))
        self.b = nn.Parameter(torch.zeros(rank, dim))
        _uniform_fan_in(self.a)

    @property
    def max_length(self) -> int:
        return self.a.shape[0]

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        """Offsets for content positions (batch x n); positions outside [0, s) get zero."""
        inside = (positions >= 0) & (positions < self.max_length)
        rows = F.embedding(positions.clamp(0, self.max_length - 1), self.a) * inside.unsqueeze(-1).to(self.a.dtype)
        return rows @ self.b


class PromptAdapter(nn.Module):
    """Soft prompt (l x d) plus the parts its method adds (`PromptMethod.build_parts`). Holds every
    trainable tensor. The adapter interface the models use, shared with merged exports: `prompt_len`,
    `uses_positions`, `offsets(ids, embeds, positions)` and `prompt_rows()`."""

    def __init__(self, config: MethodConfig, dim: int):
        super().__init__()
        from .methods import get_method

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
