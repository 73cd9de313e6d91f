"""`adept budget`: the largest ADePT bottleneck / DePT rank under a trainable-parameter budget."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer
from rich.table import Table

from ..prompt.budget import DEFAULT_MAX_LENGTH, BudgetSolution, default_budget, solve, solve_table
from ..prompt.methods import get_method, sized_method_names
from .common import console, examples, fail, print_json, require_at_least, require_at_most, user_errors

SizedMethod = Enum("SizedMethod", {name: name for name in sized_method_names()}, type=str)


def _described(method: str, max_length: int) -> tuple[str, str, str]:
    """(the method's title, its size's name, ", s = ..." where the count depends on the input length)."""
    found = get_method(method)
    extra = f", s = {max_length}" if found.offsets_follow == "positions" else ""
    return found.title, found.size_field, extra


EXAMPLES = examples(
    ("ADePT on T5-base (r = 19, 76,051 parameters)", "adept budget --dim 768 --prompt-len 60"),
    ("Table for l = 0, 20, ..., 100", "adept budget --dim 768"),
    ("Width read from a model's config (no weights downloaded)", "adept budget --model t5-3b --prompt-len 60"),
    ("DePT, as JSON", "adept budget --method dept --dim 768 --prompt-len 40 --json"),
)


@user_errors
def budget(
    dim: Annotated[int | None, typer.Option("--dim", help="Embedding width d of the model.")] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", help="Read d from this model's config (hub id, directory, .gguf or embedded name)."),
    ] = None,
    prompt_len: Annotated[
        int | None, typer.Option("--prompt-len", help="Soft-prompt length l; omit for a table of lengths.")
    ] = None,
    method: Annotated[SizedMethod, typer.Option("--method", help="Method whose size to solve.")] = SizedMethod.adept,
    budget: Annotated[
        int | None,
        typer.Option("--budget", help="Parameter budget. Default: vanilla PT with 100 tokens, 100 x d."),
    ] = None,
    max_length: Annotated[
        int, typer.Option("--max-length", help="DePT: maximum input length s (rows of A).")
    ] = DEFAULT_MAX_LENGTH,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Solve the largest bottleneck (ADePT) or rank (DePT) that fits the parameter budget.

    ADePT count = l d + 2 d r + r + d; DePT count = l d + s r + r d. No weights are downloaded.
    """
    require_at_least(1, dim=dim, budget=budget, max_length=max_length)
    require_at_least(0, prompt_len=prompt_len)
    # beyond any model (the widest embeddings are 16,384 wide, the longest contexts a few million tokens)
    require_at_most(2**20, "an embedding width", dim=dim)
    require_at_most(2**24, "a number of tokens", prompt_len=prompt_len, max_length=max_length)
    require_at_most(10**13, "a number of parameters", budget=budget)
    if (dim is None) == (model is None):
        fail("give exactly one of --dim D or --model M (the model's config supplies d)")
    if model is not None:
        from ..hf import model_dim

        dim = model_dim(model)
    method_name = method.value
    if prompt_len is None:
        rows = solve_table(method_name, dim, budget=budget, max_length=max_length)
        if as_json:
            print_json([row.to_dict() for row in rows])
        else:
            _print_table(rows, max_length)
        return
    solution = solve(method_name, dim, prompt_len, budget, max_length)
    if as_json:
        print_json(solution.to_dict())
    else:
        console.print(_sentence(solution, max_length), highlight=False, soft_wrap=True)


def _sentence(solution: BudgetSolution, max_length: int) -> str:
    title, size, extra = _described(solution.method, max_length)
    return (
        f"{title} d = {solution.dim}, l = {solution.prompt_len}{extra}: "
        f"{size} r = {solution.size}, {solution.trainable_params:,} trainable parameters "
        f"(budget {solution.budget:,})"
    )


def _print_table(rows: list[BudgetSolution], max_length: int) -> None:
    first = rows[0]
    title, size, extra = _described(first.method, max_length)
    budget_note = " (vanilla PT, 100 tokens)" if first.budget == default_budget(first.dim) else ""
    table = Table(
        title=f"{title}, d = {first.dim}{extra}, budget {first.budget:,}{budget_note}",
        title_justify="left",
    )
    table.add_column("prompt length l", justify="right")
    table.add_column(f"{size} r", justify="right")
    table.add_column("trainable parameters", justify="right")
    for row in rows:
        if row.size is None:
            table.add_row(str(row.prompt_len), "does not fit", "-")
        else:
            table.add_row(str(row.prompt_len), str(row.size), f"{row.trainable_params:,}")
    console.print(table)
