"""Parameter counts of each method and the solver that fits ADePT's bottleneck / DePT's rank to a budget.

The paper keeps every method at the size of vanilla prompt tuning with 100 tokens (100 x d):
  PT    count = l d
  DePT  count = l d + s r + r d            (A: s x r, B: r x d)
  ADePT count = l d + d r + r + r d + d    (W_down, b1, W_up, b2)
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import AdeptError

DEFAULT_PROMPT_TOKENS = 100  # the budget is vanilla PT with this many tokens
DEFAULT_MAX_LENGTH = 256
SIZED_METHODS = ("adept", "dept")


class BudgetError(AdeptError, ValueError):
    """The request cannot fit the budget, or a size is not positive; the message says what would fit."""


def default_budget(dim: int) -> int:
    return DEFAULT_PROMPT_TOKENS * dim


def pt_params(dim: int, prompt_len: int) -> int:
    return prompt_len * dim


def dept_params(dim: int, prompt_len: int, rank: int, max_length: int) -> int:
    return prompt_len * dim + max_length * rank + rank * dim


def adept_params(dim: int, prompt_len: int, bottleneck: int) -> int:
    return prompt_len * dim + 2 * dim * bottleneck + bottleneck + dim


@dataclass(frozen=True)
class BudgetSolution:
    method: str
    dim: int
    prompt_len: int
    budget: int
    bottleneck: int | None  # None: nothing with r >= 1 fits
    trainable_params: int | None

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "dim": self.dim,
            "prompt_len": self.prompt_len,
            "budget": self.budget,
            "bottleneck": self.bottleneck,
            "trainable_params": self.trainable_params,
        }


def _largest_size(method: str, dim: int, prompt_len: int, budget: int, max_length: int) -> int:
    """Largest r (possibly < 1, meaning nothing fits) with count(r) <= budget."""
    room = budget - prompt_len * dim
    if method == "adept":
        return (room - dim) // (2 * dim + 1)
    return room // (max_length + dim)


def count_params(method: str, dim: int, prompt_len: int, size: int, max_length: int = DEFAULT_MAX_LENGTH) -> int:
    if method == "adept":
        return adept_params(dim, prompt_len, size)
    if method == "dept":
        return dept_params(dim, prompt_len, size, max_length)
    raise BudgetError(f"method must be one of {', '.join(SIZED_METHODS)}; got {method!r}")


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
    if method not in SIZED_METHODS:
        raise BudgetError(f"method must be one of {', '.join(SIZED_METHODS)}; got {method!r}")
    budget = default_budget(dim) if budget is None else budget
    _check_sizes(dim, prompt_len, budget, max_length)
    size = _largest_size(method, dim, prompt_len, budget, max_length)
    if size < 1:
        longest = max_prompt_len(method, dim, budget, max_length)
        what = "bottleneck" if method == "adept" else "rank"
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
    """One row per prompt length; rows where nothing fits have bottleneck None."""
    budget = default_budget(dim) if budget is None else budget
    rows = []
    for prompt_len in prompt_lens:
        try:
            rows.append(solve(method, dim, prompt_len, budget, max_length))
        except BudgetError:
            _check_sizes(dim, prompt_len, budget, max_length)  # bad sizes still raise
            rows.append(BudgetSolution(method, dim, prompt_len, budget, None, None))
    return rows
