"""The recipe catalogue: `adept recipes` lists every shipped training recipe, `show` prints one as it is,
`copy` writes it out (never over a file), `--recipe NAME` takes a catalogue name wherever it takes a path,
and the recipes ship inside the wheel (a wheel install has them, not only a clone)."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import pytest
from typer.testing import CliRunner

from adept_cli.cli import app
from adept_cli.training.config import build_config
from adept_cli.training.recipes import CATALOGUE, RecipeNotFound, catalogue

from .helpers import REPO

runner = CliRunner()


def shipped() -> list[str]:
    """Every training recipe file in the package, found here rather than through the catalogue code."""
    files = sorted(CATALOGUE.rglob("*.yaml"))
    return [path.relative_to(CATALOGUE).with_suffix("").as_posix() for path in files if "accelerate" not in path.parts]


def test_the_list_names_every_shipped_recipe_with_what_it_is_for() -> None:
    listed = json.loads(runner.invoke(app, ["recipes", "--json"]).output)
    assert [recipe["name"] for recipe in listed] == shipped()
    sst2 = next(recipe for recipe in listed if recipe["name"] == "cpu/smollm2-sst2")
    assert (sst2["model"], sst2["task"], sst2["method"], sst2["device"]) == ("smollm2-135m", "sst2", "adept", "cpu")
    assert all(recipe["summary"] for recipe in listed)
    assert (REPO / "recipes" / "cpu" / "smollm2-sst2.yaml").read_text() == (
        CATALOGUE / "cpu" / "smollm2-sst2.yaml"
    ).read_text()


@pytest.mark.parametrize("name", shipped())
def test_every_recipe_builds_a_valid_config_from_its_name(name) -> None:
    recipe = next(recipe for recipe in catalogue() if recipe.name == name)
    overrides = [] if recipe.task else ["task=rte"]
    options = {} if recipe.model else {"model": "stories260k"}
    config = build_config(name, options, overrides)
    assert config.method == recipe.method and config.task == (recipe.task or "rte")


def test_show_prints_the_file_and_copy_writes_it_once(tmp_path) -> None:
    text = (CATALOGUE / "cpu" / "smollm2-rte.yaml").read_text()
    assert runner.invoke(app, ["recipes", "show", "cpu/smollm2-rte"]).output == text
    copied = runner.invoke(app, ["recipes", "copy", "cpu/smollm2-rte", str(tmp_path / "mine.yaml")])
    assert copied.exit_code == 0 and (tmp_path / "mine.yaml").read_text() == text
    again = runner.invoke(app, ["recipes", "copy", "cpu/smollm2-rte", str(tmp_path / "mine.yaml")])
    assert again.exit_code != 0 and "exists" in again.output
    into_folder = runner.invoke(app, ["recipes", "copy", "recipes/cpu/smollm2-rte.yaml", str(tmp_path)])
    assert into_folder.exit_code == 0 and (tmp_path / "smollm2-rte.yaml").read_text() == text
    unknown = runner.invoke(app, ["recipes", "show", "cpu/nope"])
    assert unknown.exit_code != 0 and "cpu/smollm2-sst2" in unknown.output and "Traceback" not in unknown.output
    with pytest.raises(RecipeNotFound):
        build_config("no/such/recipe")


def test_a_sweep_starts_from_a_catalogue_name(tmp_path) -> None:
    result = runner.invoke(
        app,
        ["sweep", "--recipe", "cpu/stories260k-rte", "--grid", "lr_prompt=0.1,0.2", "-o", str(tmp_path / "s"),
         "--launcher", "commands", "model=stories260k"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "stories260k-rte.yaml" in (tmp_path / "s" / "sweep.json").read_text()


def test_the_recipes_ship_inside_the_wheel(tmp_path) -> None:
    """A wheel built from the tracked files holds the catalogue, and the catalogue reads from it."""
    source = tmp_path / "source"
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for name in tracked:
        if (REPO / name).is_file() and not (REPO / name).is_symlink():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            (source / name).write_bytes((REPO / name).read_bytes())
    wheels = tmp_path / "wheels"
    command = [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q", "-w"]
    subprocess.run([*command, str(wheels)], check=True, capture_output=True)
    wheel = next(wheels.glob("*.whl"))
    unpacked = tmp_path / "installed"
    zipfile.ZipFile(wheel).extractall(unpacked)
    listed = subprocess.run(
        [
            sys.executable,
            "-c",
            "from adept_cli.training.recipes import catalogue; print([r.name for r in catalogue()])",
        ],
        cwd=tmp_path,
        env={"PYTHONPATH": str(unpacked), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert eval(listed) == shipped()  # noqa: S307 - the list this test's own child printed


def test_an_error_prints_brackets_as_written(monkeypatch) -> None:
    """Messages are text, not markup: an extra's name in brackets (or a user value with brackets) survives."""
    import sys

    from typer.testing import CliRunner

    from adept_cli.cli import app

    result = CliRunner().invoke(app, ["recipes", "frobnicate"])
    assert result.exit_code == 2
    assert "adept recipes [list | show NAME | copy NAME [PATH]]" in result.output, result.output
    monkeypatch.setitem(sys.modules, "lm_eval.__main__", None)  # as if the extra were not installed
    result = CliRunner().invoke(app, ["lm-eval", "ls"])
    assert result.exit_code == 2 and "pip install 'adept-cli[lm-eval]'" in result.output, result.output
