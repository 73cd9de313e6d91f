"""DePT (Shi & Lipani, 2024): a short prompt plus low-rank *position* offsets A B added to the input
embeddings: row i of A B goes to whichever token stands at content position i.

Count = l d + s r + r d (A: s x r, B: r x d; s the number of input positions with an offset).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

from ..config import MethodConfig, help_field, require_int
from .base import PromptMethod


@dataclass
class DeptConfig(MethodConfig):
    """DePT: a short prompt plus position offsets A (s x r) B (r x d) added to the input embeddings."""

    method: ClassVar[str] = "dept"

    prompt_len: int = help_field("number of soft-prompt tokens l", default=60)
    rank: int | None = help_field(
        "rank r of the position offsets A B (default: largest that fits the budget)", default=None
    )
    max_length: int = help_field(
        "s, the number of input positions with an offset (the maximum input length); "
        "tokens at positions >= s get no offset",
        default=256,
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        require_int("max_length", self.max_length, minimum=1)
        if self.rank is not None:
            require_int("rank", self.rank, minimum=1)


class Dept(PromptMethod):
    name = "dept"
    title = "DePT"
    config_class = DeptConfig
    size_field = "rank"
    shape_fields = ("rank", "max_length")
    settings = ("rank",)
    offsets_follow = "positions"

    def count(self, dim: int, prompt_len: int, size: int | None, max_length: int) -> int:
        return prompt_len * dim + max_length * size + size * dim

    def largest_size(self, dim: int, prompt_len: int, budget: int, max_length: int) -> int:
        return (budget - prompt_len * dim) // (max_length + dim)

    def settings_for_inputs(self, settings: dict[str, Any], positions: int) -> dict[str, Any]:
        return {**settings, "max_length": positions}

    def build_parts(self, config: DeptConfig, dim: int) -> dict[str, Any]:
        from ..offsets import PositionOffsets

        return {"position_offsets": PositionOffsets(dim, config.rank, config.max_length)}

    def offsets(self, adapter: Any, ids: Any, embeds: Any, positions: Any) -> Any:
        return adapter.position_offsets(positions).to(embeds.dtype)

    def position_count(self, adapter: Any) -> int:
        return adapter.position_offsets.max_length

    @contextmanager
    def rolled_positions(self, adapter: Any, shift: int) -> Iterator[None]:
        import torch

        table = adapter.position_offsets.a
        original = table.detach().clone()
        with torch.no_grad():
            table.copy_(torch.roll(original, shifts=-shift, dims=0))
        try:
            yield
        finally:
            with torch.no_grad():
                table.copy_(original)


METHOD = Dept()
