"""The offset networks of the built-in methods: ADePT's token-shared FFN and DePT's low-rank position table.

Init follows the reference code: the offsets are exactly zero at the start (ADePT's W_up, b1, b2 and
DePT's B are zero), so every method starts as plain prompt tuning.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


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
