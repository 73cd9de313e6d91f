"""ADePT (Tang, Hu & Liu, 2025): a short prompt plus a feed-forward network shared by every token, whose
output offsets that token's input embedding: f(e) = ReLU(e W_down + b1) W_up + b2 (d -> r -> d). A token's
offset depends on the token alone, so it can be folded into the embedding table (`--format merged`).

Count = l d + 2 d r + r + d.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..config import ConfigError, MethodConfig, help_field, require_int
from .base import PromptMethod


@dataclass
class AdeptConfig(MethodConfig):
    """ADePT: a short prompt plus a token-shared feed-forward network whose output offsets each token."""

    method: ClassVar[str] = "adept"

    prompt_len: int = help_field("number of soft-prompt tokens l", default=60)
    bottleneck: int | None = help_field(
        "hidden size r of the offset network d -> r -> d (default: largest that fits the budget)", default=None
    )
    dropout: float = help_field("dropout on the offset network's hidden layer during training", default=0.0)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.bottleneck is not None:
            require_int("bottleneck", self.bottleneck, minimum=1)
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be a number in [0, 1); got {self.dropout!r}")


class Adept(PromptMethod):
    name = "adept"
    title = "ADePT"
    config_class = AdeptConfig
    size_field = "bottleneck"
    shape_fields = ("bottleneck",)
    settings = ("bottleneck", "dropout")
    offsets_follow = "tokens"
    exports = ("adept", "merged", "vllm")

    def count(self, dim: int, prompt_len: int, size: int | None, max_length: int) -> int:
        return prompt_len * dim + 2 * dim * size + size + dim

    def largest_size(self, dim: int, prompt_len: int, budget: int, max_length: int) -> int:
        return (budget - prompt_len * dim - dim) // (2 * dim + 1)

    def build_parts(self, config: AdeptConfig, dim: int) -> dict[str, Any]:
        from ..offsets import TokenOffsets

        return {"token_offsets": TokenOffsets(dim, config.bottleneck, config.dropout)}

    def offsets(self, adapter: Any, ids: Any, embeds: Any, positions: Any) -> Any:
        return adapter.token_offsets(embeds.to(adapter.prompt.dtype)).to(embeds.dtype)

    def token_offset_factors(self, adapter: Any, table: Any) -> tuple[Any, Any]:
        # f(E[id]) = ReLU(E[id] W_down + b1) W_up + b2 = [ReLU(E[id] W_down + b1), 1] [W_up; b2]: rank r + 1.
        import torch

        f = adapter.token_offsets
        hidden = torch.relu(table.to(f.down.dtype) @ f.down + f.down_bias)
        a = torch.cat([hidden, torch.ones_like(hidden[:, :1])], dim=1).T
        b = torch.cat([f.up, f.up_bias.unsqueeze(0)], dim=0).T
        return a.contiguous(), b.contiguous()


METHOD = Adept()
