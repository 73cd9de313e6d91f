"""`adept sweep --launcher local|slurm`: runs and trials as submitit jobs. The local executor's jobs really
run (stories260K, RTE, tiny limits); Slurm is stood in for by an `sbatch` on PATH that keeps the script it
is given and answers as Slurm does, so what adept asks of the scheduler is read back from that script."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from adept_cli.cli import app

from .helpers import SMOKE, STORIES, model_path

runner = CliRunner()
SETTINGS = {"steps": 4, "eval_every": 2, "scoring": "rank"}


def grid_file(folder: Path, **changes) -> Path:
    data = {
        "recipe": str(SMOKE),
        "settings": {"model": model_path(STORIES), **SETTINGS},
        "grid": {"lr_prompt": [0.03, 0.3]},
        "seeds": [1],
    } | changes
    path = folder / "grid.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.slow
def test_the_local_executor_runs_each_run_as_a_job_and_a_rerun_skips_finished_ones(tmp_path) -> None:
    folder = tmp_path / "sweep"
    file = grid_file(tmp_path)
    planned = runner.invoke(app, ["sweep", "-f", str(file), "-o", str(folder), "--launcher", "commands"])
    assert planned.exit_code == 0, planned.output
    # one run's folder is taken by a file: that job fails, the other still runs
    (folder / "runs").mkdir()
    blocked = folder / "runs" / "lr_prompt-0.03_seed-1"
    blocked.write_text("not a folder")
    first = runner.invoke(app, ["sweep", "-f", str(file), "-o", str(folder), "--launcher", "local"])
    assert first.exit_code == 2, first.output
    assert "1 job(s) failed" in first.output and "lr_prompt-0.03_seed-1" in first.output and "log:" in first.output
    assert (folder / "runs" / "lr_prompt-0.3_seed-1" / "results.json").is_file()
    log = Path(first.output.split("(log: ")[1].split(")")[0])
    assert "a file is in the way" in log.read_text()  # the job's own error, kept in its log

    blocked.unlink()
    finished = (folder / "runs" / "lr_prompt-0.3_seed-1" / "results.json").stat().st_mtime_ns
    second = runner.invoke(app, ["sweep", "-f", str(file), "-o", str(folder), "--launcher", "local", "--json"])
    assert second.exit_code == 0, second.output
    assert second.output.count("started") == 1 and "lr_prompt-0.03_seed-1: job" in second.output  # only what is left
    assert (folder / "runs" / "lr_prompt-0.3_seed-1" / "results.json").stat().st_mtime_ns == finished
    table = json.loads(second.stdout)
    assert table["runs_finished"] == 2 and table["chosen"] is not None
    # each job's files in a folder of its own submission, none reused
    assert len(list((folder / "jobs").iterdir())) == 2


@pytest.mark.slow
def test_local_jobs_add_trials_to_one_study(tmp_path) -> None:
    """Two jobs at once, each a process running one trial against the shared SQLite study."""
    import optuna

    search = {"search": "optuna", "trials": 2, "seed": 1, "pruner": "none",
              "params": {"lr_prompt": {"low": 0.01, "high": 1.0, "log": True}}}  # fmt: skip
    file = tmp_path / "search.yaml"
    file.write_text(yaml.safe_dump({"recipe": str(SMOKE), "settings": {"model": model_path(STORIES), **SETTINGS}}
                                   | search))  # fmt: skip
    folder = tmp_path / "search"
    result = runner.invoke(app, ["sweep", "-f", str(file), "-o", str(folder), "--launcher", "local", "--parallel", "2"])
    assert result.exit_code == 0, result.output
    trials = optuna.load_study(study_name="adept", storage=f"sqlite:///{folder / 'study.db'}").get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert len({t.user_attrs["pid"] for t in trials}) == 2  # two processes
    assert all((folder / "runs" / f"trial-{t.number:04d}" / "results.json").is_file() for t in trials)


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch) -> Path:
    """`sbatch` that keeps each script and answers `Submitted batch job 4242`."""
    bin_dir, kept = tmp_path / "bin", tmp_path / "submitted"
    bin_dir.mkdir()
    kept.mkdir()
    sbatch = bin_dir / "sbatch"
    sbatch.write_text(f'#!/bin/sh\ncp "$1" {kept}/\necho "Submitted batch job 4242"\n')
    sbatch.chmod(sbatch.stat().st_mode | stat.S_IEXEC)
    (bin_dir / "srun").symlink_to("/bin/true")  # submitit checks that srun exists
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return kept


def test_slurm_gets_one_job_array_with_the_settings_asked(tmp_path, fake_slurm) -> None:
    file = grid_file(tmp_path, slurm={"partition": "gpu", "gpus": 1, "time": 90, "additional": {"account": "lab"}})
    folder = tmp_path / "sweep"
    result = runner.invoke(
        app, ["sweep", "-f", str(file), "-o", str(folder), "--launcher", "slurm", "--time", "120", "--json"]
    )
    assert result.exit_code == 0, result.output
    submitted = json.loads(result.stdout)["submitted"]  # stdout holds the JSON alone
    assert [job["unit"] for job in submitted] == ["lr_prompt-0.03_seed-1", "lr_prompt-0.3_seed-1"]
    assert [job["job"] for job in submitted] == ["4242_0", "4242_1"]
    (script,) = list(fake_slurm.iterdir())
    text = script.read_text()
    assert "#SBATCH --partition=gpu" in text and "#SBATCH --gpus-per-node=1" in text
    assert "#SBATCH --time=120" in text  # the flag over the file's 90
    assert "#SBATCH --account=lab" in text and "#SBATCH --array=0-1" in text
    (jobs_file,) = list((folder / "jobs").glob("*/jobs.json"))
    assert json.loads(jobs_file.read_text()) == submitted

    # resubmitting skips finished runs: with one run finished, one job is submitted
    finished = folder / "runs" / "lr_prompt-0.03_seed-1"
    done = runner.invoke(app, ["train", "--recipe", str(SMOKE), "--model", model_path(STORIES), "lr_prompt=0.03",
                               "seed=1", *[f"{k}={v}" for k, v in SETTINGS.items()], "-o", str(finished)])  # fmt: skip
    assert done.exit_code == 0, done.output
    again = runner.invoke(app, ["sweep", "-f", str(file), "-o", str(folder), "--launcher", "slurm", "--json"])
    assert again.exit_code == 0, again.output
    assert [job["unit"] for job in json.loads(again.stdout)["submitted"]] == ["lr_prompt-0.3_seed-1"]


@pytest.mark.parametrize(
    "slurm,message",
    [
        ({"gpus": -1}, "gpus must be a whole number >= 0"),
        ({"gpus": 4}, "each job trains one run in one process (one GPU)"),
        ({"time": 0}, "time and parallel must be >= 1"),
        ({"mem_gb": "lots"}, "mem_gb must be a number > 0"),
        ({"queue": "x"}, "slurm takes partition, gpus"),
    ],
)
def test_bad_job_settings_are_one_line(slurm, message, tmp_path, fake_slurm) -> None:
    file = grid_file(tmp_path, slurm=slurm)
    result = runner.invoke(app, ["sweep", "-f", str(file), "-o", str(tmp_path / "s"), "--launcher", "slurm"])
    assert result.exit_code == 2 and message in result.output, result.output
    assert not list(fake_slurm.iterdir())


def test_slurm_refusing_is_one_line(tmp_path, monkeypatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sbatch = bin_dir / "sbatch"
    sbatch.write_text("#!/bin/sh\necho 'sbatch: error: invalid partition specified: gpu' >&2\nexit 1\n")
    sbatch.chmod(0o755)
    (bin_dir / "srun").symlink_to("/bin/true")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    result = runner.invoke(app, ["sweep", "-f", str(grid_file(tmp_path)), "-o", str(tmp_path / "s"), "--launcher",
                                 "slurm", "--partition", "gpu"])  # fmt: skip
    assert result.exit_code == 2 and "submitting to Slurm failed" in result.output
    assert "invalid partition" in result.output


def test_no_slurm_here_is_one_line(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # neither srun nor sbatch
    result = runner.invoke(app, ["sweep", "-f", str(grid_file(tmp_path)), "-o", str(tmp_path / "s"), "--launcher",
                                 "slurm"])  # fmt: skip
    assert result.exit_code == 2 and "Slurm login node" in result.output, result.output


@pytest.mark.slow
def test_ctrl_c_stops_the_local_jobs_it_started_and_the_sweep_continues(tmp_path) -> None:
    """Local jobs are processes of their own: interrupting `adept sweep` stops them too (each saving a
    checkpoint) instead of leaving them training unseen, and the same command resumes the run."""
    import signal
    import subprocess
    import sys

    from .helpers import wait_until

    settings = {"model": model_path(STORIES), "steps": 60, "eval_every": 30, "checkpoint_every": 2, "scoring": "rank"}
    file = grid_file(tmp_path, settings=settings, grid={"lr_prompt": [0.3]})
    folder = tmp_path / "sweep"
    command = [sys.executable, "-m", "adept_cli", "sweep", "-f", str(file), "-o", str(folder), "--launcher", "local"]

    # its own session, so the signal reaches the sweep alone; SIGINT handled as a terminal's Ctrl-C is (a
    # pytest-xdist worker ignores SIGINT, and a child would inherit that)
    def as_at_a_terminal() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True, preexec_fn=as_at_a_terminal)  # fmt: skip
    started = process.stdout.readline()
    while "job" not in started and started:
        started = process.stdout.readline()
    job_pid = int(started.split("job ")[1].split()[0])
    run = folder / "runs" / "lr_prompt-0.3_seed-1"
    wait_until(lambda: list(run.glob("checkpoints/step_*")) or process.poll() is not None, "a checkpoint", 120)
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 130 and "the jobs were stopped" in output, output

    def gone(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"  # ended, not yet reaped

    assert gone(job_pid)
    stopped_at = max(int(p.name.split("_")[1]) for p in run.glob("checkpoints/step_*"))
    assert stopped_at < 60
    resumed = runner.invoke(app, ["sweep", "-f", str(file), "-o", str(folder)])
    assert resumed.exit_code == 0, resumed.output
    assert "resumed from" in resumed.output and (run / "results.json").is_file()


def test_importing_submitit_leaves_the_host_process_logging_alone(tmp_path) -> None:
    """submitit configures logging on import (dictConfig), closing every handler the process has; adept
    imports it without that, so a program using adept (or pytest's own log capture) keeps its handlers."""
    import subprocess
    import sys

    script = f"""
import logging
handler = logging.FileHandler({str(tmp_path / "log.txt")!r}, mode="w")
logging.getLogger().addHandler(handler)
from adept_cli.launch import import_submitit
import_submitit()
logging.getLogger().warning("still written after submitit")
handler.flush()
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "still written after submitit" in (tmp_path / "log.txt").read_text()
