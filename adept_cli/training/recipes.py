"""The recipe catalogue: the training recipes shipped inside the package (`adept_cli/recipes/`, which a
clone also reaches as `./recipes`), by name: `cpu/smollm2-sst2` is `recipes/cpu/smollm2-sst2.yaml`.
`--recipe` takes a catalogue name wherever it takes a path; a path that exists wins."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import AdeptError
from ..files import read_yaml

CATALOGUE = Path(__file__).resolve().parent.parent / "recipes"
LAUNCHER_FOLDER = "accelerate"  # accelerate's launch configs, not training recipes


class RecipeNotFound(AdeptError, ValueError):
    """A name that is neither a file nor a recipe of the catalogue."""


@dataclass(frozen=True)
class Recipe:
    name: str
    path: Path
    model: str | None
    task: str | None
    method: str | None
    device: str  # cpu | gpu
    summary: str  # the first line of its leading comment

    def describe(self) -> dict[str, str | None]:
        return {
            "name": self.name,
            "model": self.model,
            "task": self.task,
            "method": self.method,
            "device": self.device,
            "summary": self.summary,
            "path": str(self.path),
        }


def catalogue() -> list[Recipe]:
    """Every shipped training recipe, by name."""
    recipes = []
    for path in sorted(CATALOGUE.rglob("*.yaml")):
        relative = path.relative_to(CATALOGUE)
        if relative.parts[0] == LAUNCHER_FOLDER:
            continue
        settings = read_yaml(path, AdeptError, "recipe") or {}
        lines = path.read_text(encoding="utf-8").splitlines()
        comments = [line.lstrip("# ").strip() for line in lines if line.startswith("#")]
        device = "cpu" if relative.parts[0] == "cpu" else "gpu"
        recipes.append(
            Recipe(
                relative.with_suffix("").as_posix(),
                path,
                settings.get("model"),
                settings.get("task"),
                settings.get("method"),
                device,
                _first_clause(comments[0]) if comments else "",
            )
        )
    return recipes


def _first_clause(line: str) -> str:
    """A comment's opening, up to its first colon, full stop or parenthesis: one line of a table."""
    return re.split(r": |\. | \(|; ", line, maxsplit=1)[0].rstrip(".,")


def find_recipe(name: str) -> Recipe:
    """The catalogue's recipe `name` (`cpu/smollm2-sst2`; `.yaml` and a leading `recipes/` accepted)."""
    wanted = name.removeprefix("recipes/").removesuffix(".yaml")
    known = catalogue()
    for recipe in known:
        if recipe.name == wanted:
            return recipe
    raise RecipeNotFound(
        f"no recipe named {name!r} (a file of that name does not exist either); the catalogue: "
        f"{', '.join(recipe.name for recipe in known)} (adept recipes lists them)"
    )


def recipe_file(recipe: str | os.PathLike) -> Path:
    """The file `--recipe` names: a path that exists, else a catalogue name."""
    path = Path(recipe)
    if path.exists():
        return path
    return find_recipe(str(recipe)).path
