"""`adept sweep` and `adept report` on the real stories260K Llama with tiny limits (RTE, rank scoring so the
metrics differ between runs): the runs, the chosen grid point, a kill -9 mid-sweep then a rerun, the
commands launcher, the table and plot, and the report across sweeps and runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adept_cli.cli import app

from .helpers import SMOKE, STORIES, model_path, wait_until

pytestmark = pytest.mark.slow  # every test here trains several runs

runner = CliRunner()
GRID = ["--grid", "lr_prompt=3e-2,3e-1", "--grid", "lr_offsets=1e-3,1e-2", "--seeds", "1,2"]


def base_args() -> list[str]:
    return ["--recipe", str(SMOKE), "--model", model_path(STORIES), "steps=4", "eval_every=2", "scoring=rank"]


def sweep(folder: Path, *extra: str):
    return runner.invoke(app, ["sweep", *base_args(), *GRID, "-o", str(folder), *extra])


def best_validation(run: Path) -> float:
    """From the run's own log: its best validation accuracy."""
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line]
    return max(line["accuracy"] for line in lines if line.get("kind") == "validation")


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sweep") / "rte"
    result = sweep(folder)
    assert result.exit_code == 0, result.output
    return folder


def test_a_sweep_runs_every_point_and_seed_and_chooses_on_validation(finished) -> None:
    runs = sorted((finished / "runs").iterdir())
    assert len(runs) == 8 and all((run / "results.json").is_file() for run in runs)
    table = json.loads((finished / "results.json").read_text())
    means = {}
    for row in table["points"]:
        folders = [
            finished
            / "runs"
            / f"lr_prompt-{row['point']['lr_prompt']}_lr_offsets-{row['point']['lr_offsets']}_seed-{s}"
            for s in (1, 2)
        ]
        values = [best_validation(folder) for folder in folders]
        means[tuple(row["point"].items())] = sum(values) / 2
        assert row["validation"]["mean"] == pytest.approx(sum(values) / 2)
        tests = [json.loads((f / "results.json").read_text())["test"]["accuracy"] for f in folders]
        assert row["test"]["mean"] == pytest.approx(sum(tests) / 2)
    assert tuple(table["chosen"].items()) == max(means, key=means.get)
    assert len(set(means.values())) > 1  # the grid points really differ, so the choice means something
    markdown = (finished / "results.md").read_text()
    assert "**yes**" in markdown and "8 of 8 runs finished" in markdown


def test_the_plot_is_a_real_picture(finished) -> None:
    import matplotlib.image as mpimg

    picture = mpimg.imread(finished / "validation.png")
    assert picture.shape[0] > 200 and picture.shape[1] > 300
    assert picture[..., :3].std() > 0.05  # not blank


def test_a_sweep_killed_mid_run_continues_where_it_stopped(tmp_path) -> None:
    folder = tmp_path / "killed"
    grid = ["--grid", "lr_prompt=3e-2,3e-1", "--seeds", "1,2", "steps=8", "checkpoint_every=2", "eval_every=4"]
    command = [sys.executable, "-m", "adept_cli", "sweep", *base_args(), *grid, "-o", str(folder)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "COLUMNS": "300"})  # fmt: skip
    for line in process.stdout:
        if line.startswith("[3/4]"):
            break
    third = folder / "runs" / "lr_prompt-3e-1_seed-1"  # kill -9 once it has a checkpoint
    wait_until(lambda: list(third.glob("checkpoints/step_*")) or process.poll() is not None, "its first checkpoint")
    assert process.poll() is None, "the sweep ended before its third run's first checkpoint"
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before = {p.parent.name: p.stat().st_mtime_ns for p in folder.glob("runs/*/results.json")}
    assert len(done_before) == 2

    result = runner.invoke(app, ["sweep", *base_args(), *grid, "-o", str(folder)])
    assert result.exit_code == 0, result.output
    assert result.output.count("finished: skipped") == 2
    assert "resuming" in result.output.split("[3/4]")[1].splitlines()[0]
    assert result.output.count(": starting") == 1
    for name, mtime in done_before.items():  # untouched
        assert (folder / "runs" / name / "results.json").stat().st_mtime_ns == mtime
    assert len(list(folder.glob("runs/*/results.json"))) == 4
    resumed = [json.loads(line) for line in (third / "metrics.jsonl").read_text().splitlines()]
    steps = [line["step"] for line in resumed if line.get("kind") == "train"]
    assert steps == sorted(set(steps))  # the resumed log continues without repeating steps


def test_the_commands_launcher_writes_lines_that_run(tmp_path) -> None:
    folder = tmp_path / "cluster"
    result = sweep(folder, "--launcher", "commands")
    assert result.exit_code == 0, result.output
    lines = (folder / "commands.txt").read_text().splitlines()
    assert len(lines) == 8 and all(line.startswith("accelerate launch -m adept_cli train") for line in lines)
    assert "--array=0-7" in (folder / "slurm.sh").read_text()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-c", lines[0]], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    collected = runner.invoke(app, ["sweep", "--collect", str(folder), "--json"])
    assert collected.exit_code == 0, collected.output
    table = json.loads(collected.output)
    assert table["runs_finished"] == 1 and table["chosen"] == {"lr_prompt": "3e-2", "lr_offsets": "1e-3"}


@pytest.mark.parametrize(
    "args,message",
    [
        (["--grid", "lr_prompt"], "expected KEY=V1,V2"),
        (["--grid", "seed=1,2"], "set by the sweep itself"),
        (["--grid", "lr_promt=1,2"], "unknown key 'lr_promt' (did you mean 'lr_prompt'?)"),
        (["--grid", "steps=0,2"], "steps must be >= 1"),
        (["--seeds", "1,x"], "expected integers"),
        (["--launcher", "pbs"], "--launcher must be one of"),
    ],
)
def test_bad_sweeps_are_one_line_before_any_run(args, message, tmp_path) -> None:
    result = runner.invoke(app, ["sweep", *base_args(), *args, "-o", str(tmp_path / "s")])
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "s" / "runs").exists()


def test_a_folder_of_another_sweep_is_refused(finished) -> None:
    result = runner.invoke(app, ["sweep", *base_args(), "--grid", "lr_prompt=1e-1", "-o", str(finished)])
    assert result.exit_code == 2 and "holds another sweep" in result.output


def test_report_puts_sweeps_and_runs_in_one_table(finished, tmp_path) -> None:
    other = tmp_path / "pt"
    trained = runner.invoke(app, ["train", *base_args(), "--method", "pt", "-o", str(other)])
    assert trained.exit_code == 0, trained.output
    result = runner.invoke(app, ["report", str(finished), str(other), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["methods"] == ["adept", "pt"] and report["tasks"] == ["rte"]
    table = json.loads((finished / "results.json").read_text())
    chosen = next(row for row in table["points"] if row["point"] == table["chosen"])
    assert report["cells"]["adept"]["rte"]["mean"] == pytest.approx(chosen["test"]["mean"])
    assert report["cells"]["adept"]["rte"]["n"] == 2
    pt_test = json.loads((other / "results.json").read_text())["test"]["accuracy"]
    assert report["cells"]["pt"]["rte"] == {"mean": pt_test, "std": 0.0, "n": 1, "metric": "accuracy"}
    written = runner.invoke(app, ["report", str(finished), str(other), "-o", str(tmp_path / "t.md")])
    assert written.exit_code == 0 and "| adept |" in (tmp_path / "t.md").read_text()
    missing = runner.invoke(app, ["report", str(tmp_path)])
    assert missing.exit_code == 2 and "not a run" in missing.output


def test_a_local_sweep_reads_the_base_once_and_trains_as_separate_runs_would(tmp_path, monkeypatch) -> None:
    """The runs share one read of the base model, yet each equals the run made with a fresh read: the
    same losses, metrics and adapter tensors."""
    from contextlib import nullcontext

    import torch
    from safetensors.torch import load_file

    from adept_cli import hf

    reads = []
    read_model = hf._read_model
    monkeypatch.setattr(hf, "_read_model", lambda *args: reads.append(args) or read_model(*args))
    grid = ["--grid", "lr_prompt=3e-2,3e-1", "--seeds", "1,2", "steps=3", "eval_every=3"]
    shared = runner.invoke(app, ["sweep", *base_args(), *grid, "-o", str(tmp_path / "shared")])
    assert shared.exit_code == 0, shared.output
    assert len(reads) == 1
    monkeypatch.setattr(hf, "reuse_loaded_models", nullcontext)
    fresh = runner.invoke(app, ["sweep", *base_args(), *grid, "-o", str(tmp_path / "fresh")])
    assert fresh.exit_code == 0, fresh.output
    assert len(reads) == 1 + 4

    def outcome(run: Path) -> tuple[list, dict]:
        lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line]
        for line in lines:
            line.pop("tokens_per_s", None)
        return lines, load_file(str(run / "best" / "adapter_model.safetensors"))

    names = sorted(p.name for p in (tmp_path / "fresh" / "runs").iterdir())
    assert len(names) == 4
    for name in names:
        (lines, tensors), (fresh_lines, fresh_tensors) = (
            outcome(tmp_path / s / "runs" / name) for s in ("shared", "fresh")
        )
        assert lines == fresh_lines
        assert tensors.keys() == fresh_tensors.keys()
        assert all(torch.equal(tensors[key], fresh_tensors[key]) for key in tensors)


def test_shared_loading_keeps_one_base_at_a_time(monkeypatch) -> None:
    import torch

    from adept_cli import hf

    reads = []
    read_model = hf._read_model
    monkeypatch.setattr(hf, "_read_model", lambda *args: reads.append(args[1]) or read_model(*args))
    with hf.reuse_loaded_models():
        first, second = hf.load_model(model_path(STORIES)), hf.load_model(model_path(STORIES))
        assert first is not second and reads == [None]
        hf.load_model(model_path(STORIES), torch.bfloat16)
        assert len(hf._kept_models) == 1
        hf.load_model(model_path(STORIES))
    assert reads == [None, torch.bfloat16, None] and hf._kept_models is None


def test_report_never_pools_runs_of_different_base_models() -> None:
    """Once one cell averaged a 260K-parameter model's run with a 135M one's (parameters 6,381 and 57,068)."""
    from adept_cli.report import build

    runs = [
        {"task": "rte", "method": "adept", "metric": "accuracy", "test": 60.0, "params": 6_381, "model": "stories"},
        {"task": "rte", "method": "adept", "metric": "accuracy", "test": 70.0, "params": 57_068, "model": "smollm2"},
        {"task": "rte", "method": "adept", "metric": "accuracy", "test": 72.0, "params": 57_068, "model": "smollm2"},
    ]
    report = build(runs)
    assert report["methods"] == ["adept on stories", "adept on smollm2"]
    assert report["cells"]["adept on smollm2"]["rte"]["n"] == 2 and report["params"]["adept on stories"] == 6_381
    assert build(runs[1:])["methods"] == ["adept"]  # one base model: the label stays the method
