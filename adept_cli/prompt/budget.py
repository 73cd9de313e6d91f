"""The solver that fits a method's size (ADePT's bottleneck, DePT's rank) to a parameter budget.

The paper keeps every method at the size of vanilla prompt tuning with 100 tokens (100 x d). Each method
states its own count (`PromptMethod.count`, in `methods/`):
  PT    count = l d
  DePT  count = l d + s r + r d            (A: s x r, B: r x d)
  ADePT count = l d + d r + r + r d + d    (W_down, b1, W_up, b2)
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..errors import AdeptError
from .config import MethodConfig
from .methods import PromptMethod, get_method, sized_method_names

DEFAULT_PROMPT_TOKENS = 100  # the budget is vanilla PT with this many tokens
DEFAULT_MAX_LENGTH = 256


class BudgetError(AdeptError, ValueError):
    """The request cannot fit the budget, or a size is not positive; the message says what would fit."""


def default_budget(dim: int) -> int:
    return DEFAULT_PROMPT_TOKENS * dim


@dataclass(frozen=True)
class BudgetSolution:
    method: str
    dim: int
    prompt_len: int
    budget: int
    size: int | None  # the method's size (ADePT's bottleneck, DePT's rank); None: nothing with r >= 1 fits
    trainable_params: int | None

    @property
    def size_field(self) -> str:
        """What `size` is called in the method's settings ("bottleneck", "rank")."""
        return _sized(self.method).size_field

    @property
    def bottleneck(self) -> int | None:
        """`size`, by the name earlier versions gave it for every method (kept for scripts reading it)."""
        return self.size

    def to_dict(self) -> dict:
        # "bottleneck" holds every method's size: the key `adept budget --json` has always written
        return {
            "method": self.method,
            "dim": self.dim,
            "prompt_len": self.prompt_len,
            "budget": self.budget,
            "bottleneck": self.size,
            "trainable_params": self.trainable_params,
        }


def _sized(method: str) -> PromptMethod:
    if method not in sized_method_names():
        raise BudgetError(f"method must be one of {', '.join(sized_method_names())}; got {method!r}")
    return get_method(method)


def count_params(method: str, dim: int, prompt_len: int, size: int, max_length: int = DEFAULT_MAX_LENGTH) -> int:
    return _sized(method).count(dim, prompt_len, size, max_length)


def max_prompt_len(method: str, dim: int, budget: int, max_length: int = DEFAULT_MAX_LENGTH) -> int:
    """Longest prompt that still leaves room for r = 1 (may be negative when even l = 0 does not fit)."""
    return (budget - count_params(method, dim, 0, 1, max_length)) // dim


def _check_sizes(dim: int, prompt_len: int, budget: int, max_length: int) -> None:
    for name, value, minimum in (
        ("dim", dim, 1),
        ("prompt_len", prompt_len, 0),
        ("budget", budget, 1),
        ("max_length", max_length, 1),
    ):
        if value < minimum:
            kind = "positive" if minimum == 1 else "zero or positive"
            raise BudgetError(f"{name} must be {kind}; got {value}")


def solve(
    method: str,
    dim: int,
    prompt_len: int,
    budget: int | None = None,
    max_length: int = DEFAULT_MAX_LENGTH,
) -> BudgetSolution:
    """Largest bottleneck (ADePT) or rank (DePT) whose parameter count fits `budget`.

    Raises BudgetError with a message saying what would fit when even r = 1 does not.
    """
    sized = _sized(method)
    budget = default_budget(dim) if budget is None else budget
    _check_sizes(dim, prompt_len, budget, max_length)
    size = sized.largest_size(dim, prompt_len, budget, max_length)
    if size < 1:
        longest = max_prompt_len(method, dim, budget, max_length)
        what = sized.size_field
        hint = (
            f"a prompt of at most {longest} tokens leaves room for {what} 1"
            if longest >= 0
            else f"the budget must be at least {count_params(method, dim, 0, 1, max_length):,} for any {what}"
        )
        raise BudgetError(
            f"method {method}: prompt length {prompt_len} x dim {dim} = {prompt_len * dim:,} leaves no room for a "
            f"{what} >= 1 within the budget {budget:,}; {hint} (or raise the budget)"
        )
    return BudgetSolution(
        method, dim, prompt_len, budget, size, count_params(method, dim, prompt_len, size, max_length)
    )


def solve_table(
    method: str,
    dim: int,
    prompt_lens: tuple[int, ...] = (0, 20, 40, 60, 80, 100),
    budget: int | None = None,
    max_length: int = DEFAULT_MAX_LENGTH,
) -> list[BudgetSolution]:
    """One row per prompt length; rows where nothing fits have size None."""
    budget = default_budget(dim) if budget is None else budget
    rows = []
    for prompt_len in prompt_lens:
        try:
            rows.append(solve(method, dim, prompt_len, budget, max_length))
        except BudgetError:
            _check_sizes(dim, prompt_len, budget, max_length)  # bad sizes still raise
            rows.append(BudgetSolution(method, dim, prompt_len, budget, None, None))
    return rows


def resolve_sizes(config: MethodConfig, dim: int) -> MethodConfig:
    """Fill an unset size (ADePT's bottleneck, DePT's rank) with the largest that fits the budget."""
    field = get_method(config.method).size_field
    if field is None or getattr(config, field) is not None:
        return config
    max_length = getattr(config, "max_length", None)
    extra = {} if max_length is None else {"max_length": max_length}
    solution = solve(config.method, dim, config.prompt_len, config.budget, **extra)
    return replace(config, **{field: solution.size})
