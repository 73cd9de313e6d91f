"""`adept predict`: new rows from csv / jsonl / stdin answered in order, as `adept eval` scores them,
with bad rows failing the run or reported and skipped."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adept_cli.cli import app
from adept_cli.training import train

from .helpers import data_dir, read_jsonl, stories_config

runner = CliRunner()


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("predict")
    train(stories_config(folder, "steps=4", "eval_every=4", "scoring=rank"))
    return folder / "run"


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return read_jsonl(data_dir() / "rte" / "validation.jsonl")[:12]


def test_csv_rows_are_answered_in_order_as_eval_scores_them(run, rows, tmp_path) -> None:
    source = tmp_path / "rows.csv"
    with open(source, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["premise", "hypothesis"])
        writer.writeheader()
        writer.writerows({"premise": r["premise"], "hypothesis": r["hypothesis"]} for r in rows)
    out = tmp_path / "preds.jsonl"
    result = runner.invoke(app, ["predict", "--run", str(run), "--input", str(source), "-o", str(out)])
    assert result.exit_code == 0, result.output
    answers = read_jsonl(out)
    assert [a["index"] for a in answers] == list(range(len(rows)))
    for answer in answers:
        assert answer["label"] in ("yes", "no") and sum(answer["scores"].values()) == pytest.approx(1.0)
        assert answer["label"] == max(answer["scores"], key=answer["scores"].get)

    # the same rows through `adept eval` (rank scoring) give the same labels
    folder = tmp_path / "data" / "rte"
    folder.mkdir(parents=True)
    (folder / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    scored = tmp_path / "eval.jsonl"
    evaluated = runner.invoke(
        app,
        ["eval", "--run", str(run), "--data-dir", str(tmp_path / "data"), "--scoring", "rank",
         "--limit", "100", "--predictions", str(scored)],
    )  # fmt: skip
    assert evaluated.exit_code == 0, evaluated.output
    from adept_cli.tasks import get_task

    task = get_task("rte")
    by_source = {task.prepared(r)[1]: i for i, r in enumerate(rows)}
    compared = 0
    for line in read_jsonl(scored):
        assert answers[by_source[line["source"]]]["label"] == task.label_words[line["output"]]
        compared += 1
    assert compared == 6  # the test half of the 12 rows


def test_a_bad_row_fails_the_run_or_is_skipped(run, rows, tmp_path) -> None:
    source = tmp_path / "rows.jsonl"
    lines = [{"premise": r["premise"], "hypothesis": r["hypothesis"]} for r in rows[:4]]
    lines[2] = {"premise": "no hypothesis here"}
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "preds.jsonl"
    failed = runner.invoke(app, ["predict", "--run", str(run), "--input", str(source), "-o", str(out)])
    assert failed.exit_code == 2
    assert f"{source}:3: missing field 'hypothesis'" in failed.output and "--on-error skip" in failed.output
    assert not out.exists() and not list(tmp_path.glob(".preds.jsonl.*"))  # nothing half-written
    skipped = runner.invoke(
        app, ["predict", "--run", str(run), "--input", str(source), "-o", str(out), "--on-error", "skip"]
    )
    assert skipped.exit_code == 0, skipped.output
    answers = read_jsonl(out)
    assert [a["index"] for a in answers] == [0, 1, 2, 3]
    assert "missing field 'hypothesis'" in answers[2]["error"] and "label" not in answers[2]
    assert all("label" in answers[i] for i in (0, 1, 3))
    assert "3 rows answered, 1 skipped" in skipped.output


def test_stdin_takes_json_objects_and_plain_text(run, rows) -> None:
    """A plain line is the task's input: one input field filled and formatted with the task's template
    (once answered as raw model input, which skipped the template and labelled SST-2 lines wrongly). RTE
    reads two fields, so a plain line there is an error naming them."""
    row = {"premise": rows[0]["premise"], "hypothesis": rows[0]["hypothesis"]}
    stdin = json.dumps(row) + "\n\n" + json.dumps(row) + "\n"
    result = runner.invoke(app, ["predict", "--run", str(run), "--input", "-"], input=stdin)
    assert result.exit_code == 0, result.output
    answers = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [a["index"] for a in answers] == [0, 1] and {**answers[1], "index": 0} == answers[0]
    assert all(a["label"] in ("yes", "no") for a in answers)
    plain = runner.invoke(app, ["predict", "--run", str(run), "--input", "-"], input="it rains\n")
    assert plain.exit_code == 2 and "stdin:1" in plain.output and "premise, hypothesis" in plain.output


def test_input_that_is_not_utf8_is_one_line_naming_where(run, tmp_path) -> None:
    stdin = runner.invoke(app, ["predict", "--run", str(run), "--input", "-"], input=b"fine\n\xff\xfe\n")
    assert stdin.exit_code == 2 and "stdin" in stdin.output and "not UTF-8 text" in stdin.output
    bad = tmp_path / "rows.jsonl"
    bad.write_bytes(b'{"premise": "a", "hypothesis": "b"}\n\xff\n')
    result = runner.invoke(app, ["predict", "--run", str(run), "--input", str(bad)])
    assert result.exit_code == 2 and f"{bad} is not UTF-8 text" in result.output
    junk = tmp_path / "rows.parquet"
    junk.write_bytes(b"PAR1 not really")
    result = runner.invoke(app, ["predict", "--run", str(run), "--input", str(junk)])
    assert result.exit_code == 2 and "not a readable parquet file" in result.output


@pytest.mark.parametrize("task", ["sst2", "cola"])
def test_a_plain_text_is_the_tasks_one_input_field(task) -> None:
    from adept_cli.tasks import get_task

    chosen = get_task(task)
    text = "a gripping, beautiful film"
    assert chosen.query(text).source == chosen.query({"sentence": text}).source != text
    assert chosen.query(json.loads(json.dumps(text))).source == chosen.query(text).source


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input", "missing.jsonl"], "--input missing.jsonl: no such file"),
        (["--input", "-", "--on-error", "ignore"], "--on-error must be one of fail, skip"),
        (["--input", "-", "--batch-size", "0"], "--batch-size must be >= 1"),
        (["--input", "-", "-o", "/proc/preds.jsonl"], "/proc is not writable"),
    ],
)
def test_bad_options_are_one_line(run, args, message) -> None:
    result = runner.invoke(app, ["predict", "--run", str(run), *args], input="")
    assert result.exit_code == 2 and message in result.output


def test_a_generation_task_answers_with_text(run, tmp_path) -> None:
    task = tmp_path / "echo.yaml"
    (tmp_path / "train.jsonl").write_text('{"q": "Once upon a time", "a": "there"}\n')
    task.write_text("name: echo\ndata_files: {train: train.jsonl}\ntemplate: '{q}'\ntarget_field: a\n")
    source = tmp_path / "rows.jsonl"
    source.write_text('{"q": "Once upon a time"}\n{"q": "Lily saw a"}\n')
    result = runner.invoke(app, ["predict", "--run", str(run), "--task", str(task), "--input", str(source)])
    assert result.exit_code == 0, result.output
    answers = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [a["index"] for a in answers] == [0, 1]
    assert all(isinstance(a["text"], str) and a["text"] for a in answers)
