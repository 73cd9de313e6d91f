"""The budget maths (paper's numbers) and `adept budget`, including its errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from adept_cli.cli import app
from adept_cli.prompt.budget import BudgetError, count_params, solve, solve_table

runner = CliRunner()


@pytest.mark.parametrize(
    ("dim", "prompt_len", "bottleneck", "params"),
    [
        (768, 20, 39, 76_071),
        (768, 40, 29, 76_061),
        (768, 60, 19, 76_051),
        (768, 80, 9, 76_041),
        (768, 0, 49, 76_081),  # the paper's "FFN only" ablation
        (1024, 60, 19, 101_395),
    ],
)
def test_adept_bottleneck_matches_the_paper(dim, prompt_len, bottleneck, params) -> None:
    solution = solve("adept", dim, prompt_len)
    assert (solution.bottleneck, solution.trainable_params, solution.budget) == (bottleneck, params, 100 * dim)
    # largest: one more does not fit
    assert count_params("adept", dim, prompt_len, bottleneck + 1) > 100 * dim


def test_dept_rank_matches_the_paper() -> None:
    solution = solve("dept", 768, 40, max_length=256)
    assert (solution.bottleneck, solution.trainable_params) == (45, 76_800)
    assert solve("dept", 768, 60).bottleneck == 30  # DePT's own T5-base setting (l=60, r=30)
    assert count_params("dept", 768, 40, 46, 256) > 76_800


def test_explicit_budget_overrides_the_default() -> None:
    assert solve("adept", 768, 60, budget=100_000).bottleneck == (100_000 - 60 * 768 - 768) // (2 * 768 + 1)


def test_table_marks_lengths_that_do_not_fit() -> None:
    rows = solve_table("adept", 768)
    assert [row.prompt_len for row in rows] == [0, 20, 40, 60, 80, 100]
    assert [row.bottleneck for row in rows] == [49, 39, 29, 19, 9, None]
    assert rows[-1].trainable_params is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(dim=768, prompt_len=120), "at most 96 tokens"),
        (dict(dim=768, prompt_len=100), "leaves no room"),
        (dict(dim=0, prompt_len=60), "dim must be positive"),
        (dict(dim=-5, prompt_len=60), "dim must be positive"),
        (dict(dim=768, prompt_len=-1), "prompt_len must be zero or positive"),
        (dict(dim=768, prompt_len=10, budget=0), "budget must be positive"),
        (dict(dim=768, prompt_len=10, budget=100), "budget must be at least 2,305"),
    ],
)
def test_impossible_requests_say_what_would_fit(kwargs, message) -> None:
    with pytest.raises(BudgetError, match=message):
        solve("adept", **kwargs)


def test_cli_prints_the_bottleneck_and_count() -> None:
    result = runner.invoke(app, ["budget", "--dim", "768", "--prompt-len", "60"])
    assert result.exit_code == 0, result.output
    assert "r = 19" in result.output
    assert "76,051" in result.output
    assert "76,800" in result.output


def test_cli_table_lists_every_length() -> None:
    result = runner.invoke(app, ["budget", "--dim", "768"])
    assert result.exit_code == 0, result.output
    lines = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") >= 4}
    for prompt_len, bottleneck in (("20", "39"), ("40", "29"), ("60", "19"), ("80", "9")):
        assert f" {bottleneck} " in lines[prompt_len]
    assert "does not fit" in lines["100"]


def test_cli_json_single_and_table() -> None:
    result = runner.invoke(app, ["budget", "--dim", "768", "--prompt-len", "40", "--method", "dept", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "method": "dept",
        "dim": 768,
        "prompt_len": 40,
        "budget": 76_800,
        "bottleneck": 45,
        "trainable_params": 76_800,
    }
    table = json.loads(runner.invoke(app, ["budget", "--dim", "1024", "--json"]).stdout)
    assert [row["bottleneck"] for row in table] == [49, 39, 29, 19, 9, None]
    assert table[3]["trainable_params"] == 101_395


def test_cli_reads_the_width_from_a_model_config() -> None:
    from .helpers import STORIES, T5_TOKENIZER, model_path

    result = runner.invoke(app, ["budget", "--model", model_path(T5_TOKENIZER), "--prompt-len", "60", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["dim"] == 512  # flan-t5-small's config, no weights present
    result = runner.invoke(app, ["budget", "--model", model_path(STORIES), "--prompt-len", "10", "--json"])
    assert json.loads(result.stdout)["dim"] == 64


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dim", "768", "--prompt-len", "120"], "at most 96 tokens"),
        (["--dim", "0", "--prompt-len", "60"], "--dim must be >= 1; got 0"),
        (["--dim", "768", "--prompt-len", "10", "--budget", "-3"], "--budget must be >= 1; got -3"),
        (["--prompt-len", "60"], "exactly one of --dim D or --model M"),
        (["--dim", "100000000000", "--prompt-len", "60"], "--dim is an embedding width: at most 1,048,576"),
        (["--dim", "768", "--prompt-len", "10", "--max-length", str(10**12)], "--max-length is a number of tokens"),
        (
            ["--model", "/nonexistent/model-dir", "--prompt-len", "60"],
            "model path /nonexistent/model-dir does not exist",
        ),
    ],
)
def test_cli_errors_are_one_line_and_non_zero(args, message) -> None:
    result = runner.invoke(app, ["budget", *args])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
