"""`adept plot`: training curves read back from the PNG (size, not blank) and, number for number, from the
JSON written beside it, against the runs' own metrics.jsonl (stories260K, tiny limits)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from adept_cli.cli import app
from adept_cli.training import train

from .helpers import read_jsonl, stories_config

runner = CliRunner()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plots")
    for method in ("adept", "pt"):
        train(stories_config(folder, f"method={method}", "steps=4", "log_every=1", "eval_every=2", "scoring=rank",
                             name=method))  # fmt: skip
    return folder


@pytest.mark.slow
def test_several_runs_are_overlaid_and_the_numbers_kept(runs, tmp_path) -> None:
    import matplotlib.image as mpimg

    picture = tmp_path / "curves.png"
    result = runner.invoke(app, ["plot", str(runs / "adept"), str(runs / "pt"), "-o", str(picture)])
    assert result.exit_code == 0, result.output
    pixels = mpimg.imread(picture)
    assert pixels.shape[0] > 300 and pixels.shape[1] > 1000 and pixels[..., :3].std() > 0.05
    data = json.loads(picture.with_suffix(".json").read_text())["runs"]
    assert [curve["label"] for curve in data] == ["adept", "pt"]
    for curve in data:
        records = read_jsonl(runs / curve["label"] / "metrics.jsonl")
        train_lines = [r for r in records if r["kind"] == "train"]
        assert curve["loss"] == {"step": [r["step"] for r in train_lines], "value": [r["loss"] for r in train_lines]}
        assert curve["loss"]["step"] == [1, 2, 3, 4]
        validation = [r for r in records if r["kind"] == "validation"]
        assert curve["validation"] == {
            "metric": "accuracy",
            "step": [2, 4],
            "value": [r["accuracy"] for r in validation],
        }
    assert set(data[0]["learning_rates"]) == {"lr_prompt", "lr_offsets"} and set(data[1]["learning_rates"]) == {
        "lr_prompt"
    }


def test_one_run_is_drawn_into_its_folder_and_bad_input_is_one_line(runs, tmp_path) -> None:
    result = runner.invoke(app, ["plot", str(runs / "pt")])
    assert result.exit_code == 0 and (runs / "pt" / "curves.png").is_file() and (runs / "pt" / "curves.json").is_file()
    several = runner.invoke(app, ["plot", str(runs / "pt"), str(runs / "adept")])
    assert several.exit_code == 2 and "-o FILE.png" in several.output
    not_a_run = runner.invoke(app, ["plot", str(tmp_path), "-o", str(tmp_path / "x.png")])
    assert not_a_run.exit_code == 2 and "is not a run directory" in not_a_run.output
    wrong_suffix = runner.invoke(app, ["plot", str(runs / "pt"), "-o", str(tmp_path / "x.jpg")])
    assert wrong_suffix.exit_code == 2 and "expected a .png" in wrong_suffix.output
