"""`adept recipes`: the shipped training recipes; show one, or copy it out to edit."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from .common import console, examples, fail, print_json, user_errors, writable_problem

EXAMPLES = examples(
    ("Every shipped recipe", "adept recipes"),
    ("One recipe's settings", "adept recipes show cpu/smollm2-sst2"),
    ("A copy to edit, then train from it", "adept recipes copy cpu/smollm2-sst2 my.yaml && adept train -r my.yaml"),
    ("Train from a catalogue name", "adept train --recipe cpu/smollm2-sst2"),
)
ACTIONS = ("list", "show", "copy")


@user_errors
def recipes_command(
    action: Annotated[str, typer.Argument(help="list (the default), show NAME, or copy NAME [PATH].")] = "list",
    name: Annotated[str | None, typer.Argument(help="A recipe's name, as the list gives it.")] = None,
    path: Annotated[
        Path | None, typer.Argument(help="copy: where to write it (default: NAME's file name, here).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The training recipes that ship with adept (name, model, task, method, device, what each is for).
    Any command's --recipe takes a name from this list as well as a path."""
    from ..training.recipes import catalogue, find_recipe

    if action not in ACTIONS:
        fail(f"unknown action {action!r}: adept recipes [list | show NAME | copy NAME [PATH]]")
    if action == "list":
        if name is not None or path is not None:
            fail("adept recipes list takes no name (show NAME describes one)")
        _list(catalogue(), as_json)
        return
    if name is None:
        fail(f"adept recipes {action} needs a recipe name (adept recipes lists them)")
    recipe = find_recipe(name)
    if action == "show":
        if path is not None:
            fail("adept recipes show takes one name")
        if as_json:
            print_json({**recipe.describe(), "text": recipe.path.read_text(encoding="utf-8")})
        else:
            typer.echo(recipe.path.read_text(encoding="utf-8"), nl=False)  # as it is, unwrapped
        return
    target = path or Path(recipe.path.name)
    if target.is_dir():
        target = target / recipe.path.name
    if target.exists():
        fail(f"{target} exists; name another PATH (a copy never overwrites)")
    problem = writable_problem(target.parent if str(target.parent) else Path("."))
    if problem:
        fail(f"{target.parent}: {problem}")
    shutil.copyfile(recipe.path, target)
    if as_json:
        print_json({**recipe.describe(), "copied_to": str(target)})
    else:
        console.print(f"wrote {target} (adept train --recipe {target})", highlight=False, soft_wrap=True)


def _list(recipes: list, as_json: bool) -> None:
    if as_json:
        print_json([recipe.describe() for recipe in recipes])
        return
    table = Table(title="adept's recipes (adept recipes show NAME)")
    table.add_column("name", no_wrap=True)
    for column in ("model", "task", "method", "device", "what it is for"):
        table.add_column(column, overflow="fold")
    for recipe in recipes:
        table.add_row(
            recipe.name,
            recipe.model or "-",
            recipe.task or "(any)",
            recipe.method or "-",
            recipe.device,
            recipe.summary,
        )
    console.print(table)
