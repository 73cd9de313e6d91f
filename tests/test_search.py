"""`adept sweep` with `search: optuna` on the real stories260K Llama (RTE, rank scoring, tiny limits): a
search of 4 trials finds the learning rate known to be better (lr_prompt 3.0 beats 1e-5 on these 64
validation examples: 57.8 against 46.9), the median pruner stops the worse trial, a search killed mid-trial
continues that trial from its checkpoint, and the sweep file's mistakes are one line each."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from adept_cli.cli import app

from .helpers import SMOKE, STORIES, model_path, wait_until

runner = CliRunner()
SETTINGS = {"steps": 8, "eval_every": 4, "scoring": "rank", "validation_limit": 64, "lr_offsets": 1.0e-5}
BETTER, WORSE = 3.0, 1.0e-5


def sweep_file(folder: Path, **changes) -> Path:
    data = {
        "recipe": str(SMOKE),
        "settings": {"model": model_path(STORIES), **SETTINGS},
        "search": "optuna",
        "trials": 4,
        "seed": 0,
        "pruner": {"name": "median", "startup_trials": 1},
        "params": {"lr_prompt": [WORSE, BETTER]},
    } | changes
    path = folder / "search.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def trials_of(folder: Path) -> list:
    import optuna

    return optuna.load_study(study_name="adept", storage=f"sqlite:///{folder / 'study.db'}").get_trials()


@pytest.mark.slow
def test_a_search_finds_the_better_learning_rate_and_prunes_the_worse(tmp_path) -> None:
    folder = tmp_path / "search"
    result = runner.invoke(app, ["sweep", "--file", str(sweep_file(tmp_path)), "-o", str(folder), "--json"])
    assert result.exit_code == 0, result.output
    table = json.loads(result.stdout)  # stdout holds the JSON alone
    trials = trials_of(folder)
    assert len(trials) == 4 and {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"}
    tried = {t.params["lr_prompt"] for t in trials}
    assert tried == {WORSE, BETTER}  # both were tried, so the choice is a comparison
    assert table["chosen"] == {"lr_prompt": repr(BETTER)}
    chosen = next(row for row in table["points"] if row["trial"] == table["chosen_trial"])
    run = Path(chosen["seeds"][0]["run"])
    assert run == folder / "runs" / f"trial-{table['chosen_trial']:04d}"
    results = json.loads((run / "results.json").read_text())  # an ordinary run directory
    assert chosen["validation"]["mean"] == pytest.approx(results["validation"]["accuracy"])
    assert (run / "config.yaml").is_file() and (run / "best").is_dir()
    # the worse rate falls behind the better one's step-4 validation after one finished trial: pruned
    worse = [t for t in trials if t.params["lr_prompt"] == WORSE]
    assert worse and all(t.state.name == "PRUNED" for t in worse if t.number > 0)
    assert max(t.intermediate_values[4] for t in worse) < max(
        t.intermediate_values[4] for t in trials if t.params["lr_prompt"] == BETTER
    )
    pruned_row = next(row for row in table["points"] if row["state"] == "pruned")
    assert pruned_row["finished"] == 0 and pruned_row["value"] == pytest.approx(46.875)
    # adept report and --collect read the search as they read a grid sweep
    report = runner.invoke(app, ["report", str(folder), "--json"])
    assert report.exit_code == 0, report.output
    assert json.loads(report.output)["cells"]["adept"]["rte"]["mean"] == pytest.approx(results["test"]["accuracy"])
    collected = runner.invoke(app, ["sweep", "--collect", str(folder), "--json"])
    assert collected.exit_code == 0 and json.loads(collected.output)["chosen_trial"] == table["chosen_trial"]
    markdown = (folder / "results.md").read_text()
    assert "4 of 4 trials done" in markdown and "pruned" in markdown and "**yes**" in markdown
    # the same command again: the study has its 4 trials, nothing runs
    again = runner.invoke(app, ["sweep", "--file", str(sweep_file(tmp_path)), "-o", str(folder)])
    assert again.exit_code == 0 and "starting" not in again.output and len(trials_of(folder)) == 4
    # a larger total continues the study; another search space is another sweep
    more = runner.invoke(app, ["sweep", "--file", str(sweep_file(tmp_path, trials=5)), "-o", str(folder)])
    assert more.exit_code == 0 and more.output.count("starting") == 1 and len(trials_of(folder)) == 5
    other = runner.invoke(
        app, ["sweep", "--file", str(sweep_file(tmp_path, params={"lr_prompt": [0.5, 1.0]})), "-o", str(folder)]
    )
    assert other.exit_code == 2 and "holds another sweep" in other.output


@pytest.mark.slow
def test_a_search_killed_mid_trial_continues_that_trial_from_its_checkpoint(tmp_path) -> None:
    folder = tmp_path / "killed"
    file = sweep_file(tmp_path, trials=3, pruner="none", settings={"model": model_path(STORIES), **SETTINGS,
                                                                   "checkpoint_every": 2})  # fmt: skip
    command = [sys.executable, "-m", "adept_cli", "sweep", "--file", str(file), "-o", str(folder)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "COLUMNS": "300"})  # fmt: skip
    second = folder / "runs" / "trial-0001"
    wait_until(lambda: list(second.glob("checkpoints/step_*")) or process.poll() is not None, "a checkpoint of trial 1")
    assert process.poll() is None, "the search ended before its second trial's first checkpoint"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert [t.state.name for t in trials_of(folder)] == ["COMPLETE", "RUNNING"]  # as the kill left it
    first_results = (folder / "runs" / "trial-0000" / "results.json").stat().st_mtime_ns

    result = runner.invoke(app, ["sweep", "--file", str(file), "-o", str(folder)])
    assert result.exit_code == 0, result.output
    assert "trial 2 (trial-0001): resuming" in result.output  # the killed trial's folder, from its checkpoint
    assert "resumed from" in result.output
    trials = trials_of(folder)
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert trials[2].params == trials[1].params and trials[2].user_attrs["resumes"] == 1
    assert (folder / "runs" / "trial-0000" / "results.json").stat().st_mtime_ns == first_results
    assert sorted(p.name for p in (folder / "runs").iterdir()) == ["trial-0000", "trial-0001", "trial-0003"]
    lines = [json.loads(line) for line in (second / "metrics.jsonl").read_text().splitlines()]
    steps = [line["step"] for line in lines if line.get("kind") == "train"]
    assert steps == sorted(set(steps)) and steps[-1] == 8  # continued, not restarted, to the end
    table = json.loads((folder / "results.json").read_text())
    assert [row["trial"] for row in table["points"]] == [0, 2, 3]  # the killed trial shown once, as its continuation
    assert table["runs_finished"] == 3


def test_a_trial_naming_a_folder_outside_the_sweep_is_refused(tmp_path) -> None:
    """A study is a file that can come from a stranger: its trials choose no folder outside runs/."""
    import optuna

    from adept_cli.search import Search
    from adept_cli.sweep import SweepError
    from adept_cli.sweep_file import SearchSpec

    spec = SearchSpec.parse({"trials": 2, "params": {"lr_prompt": [0.1, 0.2]}}, "test")
    search = Search(tmp_path, None, (), spec)
    study = search.study()
    study.enqueue_trial({"lr_prompt": 0.1}, user_attrs={"folder_of": "../../home"})
    study.enqueue_trial({"lr_prompt": 0.1}, user_attrs={"folder_of": 7})
    study.optimize(lambda trial: trial.suggest_categorical("lr_prompt", [0.1, 0.2]), n_trials=2)
    bad, later = optuna.load_study(study_name="adept", storage=search.storage_url).get_trials()
    for trial in (bad, later):
        with pytest.raises(SweepError, match="no earlier trial of this study"):
            search.folder_of(trial)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_a_running_trial_of_another_host_is_left_to_its_heartbeat(tmp_path) -> None:
    """A trial whose process is gone from this host is failed and queued at once; one running on another
    host (or alive here) is not touched: only its heartbeat going stale fails it."""
    import socket
    import sqlite3

    from optuna.trial import TrialState

    from adept_cli.search import Search, recover
    from adept_cli.sweep_file import SearchSpec

    spec = SearchSpec.parse({"trials": 3, "params": {"lr_prompt": [0.1, 0.2]}}, "test")
    search = Search(tmp_path, None, (), spec)
    storage = search.storage()
    study = search.study(storage)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    owners = [("elsewhere.example", 1), (socket.gethostname(), os.getpid()), (socket.gethostname(), int(gone.stdout)),
              ("lost.example", 1)]  # fmt: skip
    ids = []
    for number, (host, pid) in enumerate(owners):
        trial = study.ask()
        ids.append(trial._trial_id)
        trial.suggest_categorical("lr_prompt", [0.1, 0.2])
        trial.set_user_attr("host", host)
        trial.set_user_attr("pid", pid)
        storage.record_heartbeat(trial._trial_id)
        checkpoint = tmp_path / "runs" / f"trial-{number:04d}" / "checkpoints" / "step_2"
        checkpoint.mkdir(parents=True)
    # the lost host's last heartbeat long ago (as a clock would have it after its machine went away)
    with sqlite3.connect(tmp_path / "study.db") as database:
        database.execute("UPDATE trial_heartbeats SET heartbeat = '2000-01-01 00:00:00' WHERE trial_id = ?", (ids[3],))
    queued = recover(search, study, storage)
    states = [t.state for t in study.get_trials()]
    assert queued == [2, 3]
    assert states[:4] == [TrialState.RUNNING, TrialState.RUNNING, TrialState.FAIL, TrialState.FAIL]
    assert states[4:] == [TrialState.WAITING] * 2
    assert [t.user_attrs["folder_of"] for t in study.get_trials()[4:]] == [2, 3]
    assert recover(search, study, storage) == []  # queued once, not again


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"trials": 0}, "trials must be a whole number >= 1"),
        ({"params": {}}, "a search needs params"),
        ({"params": {"lr_prompt": {"low": 1, "high": 0.1}}}, "low (1) must be below high (0.1)"),
        ({"params": {"lr_prompt": {"low": 0, "high": 1, "log": True}}}, "a log range needs low > 0"),
        ({"params": {"lr_prompt": {"low": 0.1, "hi": 1}}}, "unknown key 'hi'"),
        ({"params": {"seed": [1, 2]}}, "set by the sweep itself"),
        ({"params": {"lr_promt": [0.1]}}, "unknown key 'lr_promt' (did you mean 'lr_prompt'?)"),
        ({"params": {"steps": {"low": 0, "high": 4}}}, "steps must be >= 1"),
        ({"sampler": "grid"}, "sampler must be one of tpe, random"),
        ({"pruner": "hyperband"}, "pruner must be median or none"),
        ({"storage": "study.db"}, "storage must be a database URL"),
        ({"search": "bayes"}, "search must be grid or optuna"),
        ({"grid": {"lr_prompt": [0.1]}}, "a search takes params"),
        ({"seeds": [1, 2]}, "one seed per trial"),
        ({"colour": "red"}, "unknown key 'colour'"),
    ],
)
def test_bad_sweep_files_are_one_line_before_any_trial(changes, message, tmp_path) -> None:
    result = runner.invoke(app, ["sweep", "--file", str(sweep_file(tmp_path, **changes)), "-o", str(tmp_path / "s")])
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "s" / "runs").exists() and not (tmp_path / "s" / "study.db").exists()


def test_a_sweep_file_can_hold_a_grid(tmp_path) -> None:
    """The same file format plans a grid sweep: its grid and seeds, and flags adding to them."""
    from adept_cli.search import open_sweep
    from adept_cli.sweep import Sweep

    file = tmp_path / "grid.yaml"
    file.write_text(yaml.safe_dump({"recipe": str(SMOKE), "settings": {"model": model_path(STORIES)},
                                    "grid": {"lr_prompt": [0.1, 0.3]}, "seeds": [1, 2]}))  # fmt: skip
    result = runner.invoke(
        app,
        [
            "sweep",
            "-f",
            str(file),
            "--grid",
            "lr_offsets=1e-3,1e-2",
            "-o",
            str(tmp_path / "g"),
            "--launcher",
            "commands",
        ],  # fmt: skip
    )
    assert result.exit_code == 0, result.output
    sweep = open_sweep(tmp_path / "g")
    assert isinstance(sweep, Sweep) and sweep.grid == {"lr_prompt": ["0.1", "0.3"], "lr_offsets": ["1e-3", "1e-2"]}
    assert sweep.seeds == (1, 2) and len((tmp_path / "g" / "commands.txt").read_text().splitlines()) == 8


def test_the_documented_sweep_file_plans(tmp_path) -> None:
    """docs/sweeps.md's example file is read and every distribution checked against a real recipe."""
    from adept_cli.search import plan_search
    from adept_cli.sweep_file import read_sweep_file

    text = (Path(__file__).resolve().parents[1] / "docs" / "sweeps.md").read_text()
    example = text.split("## The sweep file")[1].split("```yaml\n")[1].split("```")[0]
    (tmp_path / "search.yaml").write_text(example)
    planned = read_sweep_file(tmp_path / "search.yaml")
    assert planned["search"].trials == 20 and planned["slurm"]["partition"] == "gpu"
    assert [param.name for param in planned["search"].params] == ["lr_prompt", "lr_offsets", "prompt_len",
                                                                  "prompt_init"]  # fmt: skip
    assert planned["search"].params[2].integer and not planned["search"].params[0].integer
    from adept_cli.training.recipes import recipe_file

    search = plan_search(tmp_path / "s", recipe_file(planned["recipe"]), planned["search"], planned["settings"])
    assert search.shown_url() == "postgresql://db.example/adept"  # never the user part


def test_a_storage_that_cannot_be_opened_is_one_line_without_its_password(tmp_path) -> None:
    file = sweep_file(tmp_path, storage="nosuchdriver://alice:secret@db.example/adept")
    result = runner.invoke(app, ["sweep", "--file", str(file), "-o", str(tmp_path / "s")])
    assert result.exit_code == 2 and "the study's storage nosuchdriver://db.example/adept cannot be opened" in (
        result.output
    ), result.output
    assert "secret" not in result.output and "Traceback" not in result.output


def test_a_damaged_study_and_a_search_for_the_commands_launcher_are_one_line(tmp_path) -> None:
    file = sweep_file(tmp_path)
    commands = runner.invoke(app, ["sweep", "-f", str(file), "-o", str(tmp_path / "c"), "--launcher", "commands"])
    assert commands.exit_code == 2 and "--launcher commands writes grid runs" in commands.output
    assert not (tmp_path / "c").exists()  # refused before planning
    from adept_cli.search import plan_search
    from adept_cli.sweep_file import read_sweep_file

    planned = read_sweep_file(file)
    plan_search(tmp_path / "s", SMOKE, planned["search"], [*planned["settings"], "seed=42"])
    (tmp_path / "s" / "study.db").write_bytes(b"not a database at all")
    for args in (["-f", str(file), "-o", str(tmp_path / "s")], ["--collect", str(tmp_path / "s")]):
        result = runner.invoke(app, ["sweep", *args])
        assert result.exit_code == 2 and "cannot be opened: (sqlite3.DatabaseError) file is not a database" in (
            result.output
        ), result.output
        assert len(result.output.strip().splitlines()) == 1


def test_without_the_extras_each_part_says_which_to_install(tmp_path, monkeypatch) -> None:
    from adept_cli.search import plan_search
    from adept_cli.sweep_file import read_sweep_file

    file = sweep_file(tmp_path)
    planned = read_sweep_file(file)
    plan_search(tmp_path / "s", SMOKE, planned["search"], [*planned["settings"], "seed=42"]).study()  # its study.db
    monkeypatch.setitem(sys.modules, "optuna", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "submitit", None)
    cases = [
        (["sweep", "-f", str(file), "-o", str(tmp_path / "s")], "pip install 'adept-cli[search]'"),
        (["sweep", "--collect", str(tmp_path / "s")], "pip install 'adept-cli[search]'"),
        (["report", str(tmp_path / "s")], "pip install 'adept-cli[search]'"),
        (["sweep", "--recipe", str(SMOKE), "-o", str(tmp_path / "g"), "--launcher", "local"],
         "pip install 'adept-cli[cluster]'"),
    ]  # fmt: skip
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and message in result.output, (args, result.output)


@pytest.mark.filterwarnings("ignore:Fixed parameter")
def test_a_queued_trial_outside_the_distributions_is_refused(tmp_path) -> None:
    """Optuna runs a queued trial's values even outside the distribution (with a warning): adept refuses."""
    from adept_cli.search import Search, run_trials
    from adept_cli.sweep import SweepError
    from adept_cli.sweep_file import SearchSpec

    spec = SearchSpec.parse({"trials": 1, "params": {"lr_prompt": {"low": 0.1, "high": 0.2}}}, "test")
    search = Search(tmp_path, str(SMOKE), (f"model={model_path(STORIES)}",), spec)
    search.study().enqueue_trial({"lr_prompt": 50.0})
    with pytest.raises(SweepError, match=r"asks for lr_prompt=50.0, outside the search's distributions"):
        run_trials(search)
    assert not (tmp_path / "runs").exists()  # nothing trained
    assert [t.state.name for t in search.trials()] == ["FAIL"]  # so the next run draws its own trial instead
    assert search.remaining(search.trials()) == 1


def test_of_two_trials_with_the_same_settings_only_the_chosen_one_is_chosen() -> None:
    """Trials can draw equal settings (choices repeat): the table, plot and report mark the chosen trial,
    not every row sharing its settings; a grid table still chooses by point."""
    from adept_cli.sweep import is_chosen

    rows = [{"point": {"lr_prompt": "3.0"}, "trial": number} for number in (0, 2)]
    search_table = {"chosen": {"lr_prompt": "3.0"}, "chosen_trial": 2}
    assert [is_chosen(row, search_table) for row in rows] == [False, True]
    grid_rows = [{"point": {"lr_prompt": "3.0"}}, {"point": {"lr_prompt": "0.3"}}]
    assert [is_chosen(row, {"chosen": {"lr_prompt": "3.0"}}) for row in grid_rows] == [True, False]
