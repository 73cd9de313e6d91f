"""Search beyond grids: `search: optuna` in a sweep file. Optuna chooses each trial's settings from the
distributions given (TPE by default), the median pruner stops a trial whose validation metric falls behind
the others' at the same step, and every trial is an ordinary run directory.

```
<sweep>/sweep.json            the plan: recipe, settings, the search (distributions, trials, sampler, pruner)
<sweep>/study.db              the Optuna study (SQLite), unless the sweep file names another storage URL
<sweep>/runs/trial-NNNN/      an ordinary run directory per trial
<sweep>/results.md|json, validation.png   the table, as a grid sweep writes it (one row per trial)
```

The study lives in its storage, so an interrupted search continues with the same command, and any number
of processes or machines pointed at one storage add trials to one study. A trial interrupted (Ctrl-C,
kill -9, a lost machine) is run again from its newest checkpoint, in its own folder, by the next process
that starts: at once when its process is known gone (same host), else once its heartbeat is stale.
"""

from __future__ import annotations

import math
import os
import re
import socket
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .run_dir import RunDir
from .sweep import (
    RUNS_DIR,
    SWEEP_FILE,
    SWEEP_FORMAT_VERSION,
    Sweep,
    SweepError,
    collect,
    is_chosen,
    load,
    point_label,
    read_plan,
    run_row,
    save_plan,
    stats,
    table_markdown,
    write_table,
)
from .sweep_file import STUDY_FILE, SearchSpec, is_whole, setting

STUDY_NAME = "adept"


def import_optuna() -> Any:
    """Optuna, or a clear line when the [search] extra is not installed."""
    try:
        import optuna
    except ImportError:
        raise SweepError("a search (search: optuna) needs optuna: pip install 'adept-cli[search]'") from None
    return optuna


# A trial's process beats every HEARTBEAT_S; one silent for GRACE_S is taken as gone (another host's kill -9).
HEARTBEAT_S, GRACE_S = 30, 120


# -- the search ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Search:
    directory: Path
    recipe: str | None
    overrides: tuple[str, ...]
    spec: SearchSpec

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": SWEEP_FORMAT_VERSION,
            "recipe": self.recipe,
            "overrides": list(self.overrides),
            "search": self.spec.to_dict(),
        }

    @property
    def storage_url(self) -> str:
        return self.spec.storage or f"sqlite:///{(self.directory / STUDY_FILE).resolve()}"

    def first_of(self, trial: Any) -> int:
        """The trial whose run folder this trial uses: its own, or the one it continues (checked: a study is
        a file that can come from elsewhere, and its trials must not name folders outside this sweep)."""
        first = trial.user_attrs.get("folder_of", trial.number)
        if not is_whole(first) or not 0 <= first <= trial.number:
            raise SweepError(f"{self.shown_url()}: trial {trial.number} continues {first!r}, which is no earlier "
                             "trial of this study")  # fmt: skip
        return first

    def folder_of(self, trial: Any) -> Path:
        return self.directory / RUNS_DIR / f"trial-{self.first_of(trial):04d}"

    def config(self, values: dict[str, Any], folder: Path) -> Any:
        from .training import build_config

        settings = [f"{name}={setting(value)}" for name, value in values.items()]
        return build_config(self.recipe, None, [*self.overrides, *settings, f"output_dir={folder}"])

    def check(self) -> None:
        """Each setting's every choice or bound builds a valid run (a bad one fails before any trial)."""
        from .training import TrainConfigError

        problems = []
        for param in self.spec.params:
            for value in param.extremes():
                try:
                    self.config({param.name: value}, self.directory / RUNS_DIR / "check")
                except TrainConfigError as error:
                    problems.append(f"params.{param.name} = {setting(value)}: {error}")
        if problems:
            raise SweepError("; ".join(dict.fromkeys(problems)))

    # -- the study --

    def study_exists(self) -> bool:
        return self.spec.storage is not None or (self.directory / STUDY_FILE).is_file()

    def storage(self) -> Any:
        optuna = import_optuna()

        try:
            # Optuna marks heartbeats experimental; tests/test_search.py covers what adept relies on
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    self.storage_url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S
                )
        except Exception as error:  # a URL without its driver, an unreachable server, a damaged file
            why = (str(error).splitlines() or [type(error).__name__])[0].replace(self.storage_url, self.shown_url())
            raise SweepError(f"the study's storage {self.shown_url()} cannot be opened: {why}") from None

    def shown_url(self) -> str:
        """The storage URL without its user and password (it is printed and written into tables)."""
        return re.sub(r"//[^/@]*@", "//", self.storage_url)

    def study(self, storage: Any = None) -> Any:
        optuna = import_optuna()

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # adept says what happens to each trial
        sampler = (
            optuna.samplers.TPESampler(seed=self.spec.seed)
            if self.spec.sampler == "tpe"
            else optuna.samplers.RandomSampler(seed=self.spec.seed)
        )
        pruner = (
            optuna.pruners.MedianPruner(
                n_startup_trials=self.spec.startup_trials, n_warmup_steps=self.spec.warmup_steps
            )
            if self.spec.pruner == "median"
            else optuna.pruners.NopPruner()
        )
        return optuna.create_study(
            storage=storage or self.storage(),
            study_name=STUDY_NAME,
            sampler=sampler,
            pruner=pruner,
            direction="maximize",  # every task's main metric is better higher
            load_if_exists=True,
        )

    def trials(self) -> list[Any]:
        """The study's trials (none before the first has started)."""
        if not self.study_exists():
            return []
        return self.study().get_trials(deepcopy=False)

    def open_study(self) -> tuple[Any, int]:
        """The study, its interrupted trials queued to continue (`recover`), and how many trials are still to
        start."""
        storage = self.storage()
        study = self.study(storage)
        recover(self, study, storage)
        return study, self.remaining(study.get_trials(deepcopy=False))

    def remaining(self, trials: list[Any]) -> int:
        """Trials still to start: the total less the finished and the running (another process's)."""
        from optuna.trial import TrialState

        counted = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        return max(0, self.spec.trials - sum(trial.state in counted for trial in trials))


def plan_search(directory: str | Path, recipe: str | Path | None, spec: SearchSpec, overrides: list[str]) -> Search:
    """A new search, or the same one again (to continue it); a folder holding another sweep is refused."""
    directory = Path(directory)
    recipe_path = str(Path(recipe).resolve()) if recipe is not None else None
    search = Search(directory, recipe_path, tuple(overrides), spec)
    search.check()

    def without_total(plan: dict[str, Any]) -> dict[str, Any]:  # the total may grow or shrink
        return plan | {"search": {k: v for k, v in (plan.get("search") or {}).items() if k != "trials"}}

    save_plan(directory, search.to_dict(), without_total, "sweep file and settings (trials may change)")
    return search


def open_sweep(directory: str | Path) -> Sweep | Search:
    """The grid sweep or search planned in `directory`."""
    directory = Path(directory)
    data = read_plan(directory)
    if "search" not in data:
        return load(directory, data)
    path = directory / SWEEP_FILE
    try:
        spec = SearchSpec.parse(data["search"], str(path))
        return Search(directory, data["recipe"], tuple(data["overrides"]), spec)
    except (KeyError, TypeError):
        raise SweepError(f"{path}: not a sweep plan written by adept") from None


# -- running trials -------------------------------------------------------------------------------------


def _process_gone(trial: Any) -> bool:
    """A running trial whose process, on this host, no longer exists (killed without a word)."""
    attrs = trial.user_attrs
    if attrs.get("host") != socket.gethostname() or not isinstance(attrs.get("pid"), int):
        return False
    try:
        os.kill(attrs["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def recover(search: Search, study: Any, storage: Any) -> list[int]:
    """Trials that stopped before their end, queued to continue from their checkpoints (once each); a
    running trial of a process gone from this host is failed first. Returns the trial numbers queued."""
    optuna = import_optuna()
    from optuna.trial import TrialState

    with warnings.catch_warnings():  # experimental in Optuna, as heartbeats are
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # silent past the grace period: its host is gone
    for trial in study.get_trials(deepcopy=False):
        if trial.state == TrialState.RUNNING and _process_gone(trial):
            storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
    trials = study.get_trials(deepcopy=False)
    taken = {t.user_attrs.get("resumes") for t in trials}
    queued = []
    for trial in trials:
        if trial.state != TrialState.FAIL or trial.number in taken:
            continue
        if not RunDir(search.folder_of(trial)).checkpoint_folders():
            continue  # failed before its first checkpoint: nothing to continue, a new trial takes its place
        study.enqueue_trial(trial.params, user_attrs={"resumes": trial.number, "folder_of": search.first_of(trial)})
        queued.append(trial.number)
    return queued


def run_trials(
    search: Search, count: int | None = None, announce: Callable[[int, Path, str, dict[str, Any]], None] | None = None
) -> None:
    """Trials in this process until the study has its total (or `count` of them have run here); interrupted
    trials first, each from its checkpoint."""
    optuna = import_optuna()

    from .hf import reuse_loaded_models
    from .training import train

    study, to_run = search.open_study()
    if count is not None:
        to_run = min(to_run, count)
    if to_run == 0:
        return

    def objective(trial: Any) -> float:
        folder = search.folder_of(trial)
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        values = {param.name: param.suggest(trial) for param in search.spec.params}
        # a queued trial's values come from the study, which can come from elsewhere: Optuna only warns
        outside = [f"{p.name}={values[p.name]!r}" for p in search.spec.params if not p.contains(values[p.name])]
        if outside:
            raise SweepError(
                f"trial {trial.number} of {search.shown_url()} asks for {', '.join(outside)}, outside the search's "
                "distributions: it is failed unrun, and the same command goes on with trials of its own drawing"
            )
        status = RunDir(folder).status()
        if announce is not None:
            announce(trial.number, folder, "resuming" if status == "started" else "starting", values)
        # the pruner compares whole curves: the steps the interrupted trial reported count for this one
        reported = set()
        if "resumes" in trial.user_attrs:
            for step, value in study.trials[trial.user_attrs["resumes"]].intermediate_values.items():
                trial.report(value, step)
                reported.add(step)

        def on_validation(step: int, metric: float) -> None:
            if step not in reported:
                trial.report(metric, step)
                reported.add(step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"validation {metric:.4g} at step {step} is below the median")

        results = train(search.config(values, folder), "auto" if status == "started" else None, None, on_validation)
        return results["validation"][results["main_metric"]]

    def stop_at_total(study: Any, trial: Any) -> None:
        # another process may have finished trials meanwhile: the study's total, not this process's count
        if announce is not None:
            announce(trial.number, search.folder_of(trial), trial.state.name.lower(), trial.params)
        if search.remaining(study.get_trials(deepcopy=False)) == 0:
            study.stop()

    with reuse_loaded_models(), warnings.catch_warnings():
        # Optuna 4 warns that its stale-trial check (heartbeats) is experimental, once per trial
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.optimize(objective, n_trials=to_run, callbacks=[stop_at_total])


# -- the table --------------------------------------------------------------------------------------------


def collect_search(search: Search) -> dict[str, Any]:
    """One row per trial (a failed trial continued by a later one is shown once, as the later), laid out as
    a grid sweep's table: the chosen trial is the finished one with the best validation metric."""
    trials = search.trials()
    continued = {t.user_attrs.get("resumes") for t in trials}
    seed = search.config({}, search.directory).seed  # every trial's: a search never searches the seed
    rows, metric, task, method = [], None, None, None
    for trial in trials:
        if trial.number in continued:
            continue
        folder = search.folder_of(trial)
        results = RunDir(folder).read_results()
        seeds = []
        if results is not None:
            metric, task, method = results["main_metric"], results["task"], results["method"]
            seeds.append(run_row(results, folder, seed))
        rows.append(
            {
                "point": {name: setting(value) for name, value in trial.params.items()},
                "label": f"trial {trial.number}",
                "trial": trial.number,
                "state": trial.state.name.lower(),
                "value": trial.value if trial.value is None or math.isfinite(trial.value) else None,
                "finished": len(seeds),
                "seeds": seeds,
                "validation": stats([s["validation"] for s in seeds]),
                "test": stats([s["test"] for s in seeds]),
            }
        )
    finished = [row for row in rows if row["finished"]]
    chosen = max(finished, key=lambda row: row["validation"]["mean"]) if finished else None
    states = Counter(row["state"] for row in rows)
    return {
        "task": task,
        "method": method,
        "main_metric": metric,
        "search": search.spec.to_dict() | {"storage": search.shown_url()},
        "seeds": [None],
        "points": rows,
        "chosen": chosen["point"] if chosen else None,
        "chosen_trial": chosen["trial"] if chosen else None,
        "chosen_complete": True,
        "runs_finished": len(finished),
        "runs_total": search.spec.trials,
        "states": dict(states),
    }


def describe_search(search: Search) -> str:
    states = Counter(trial.state.name.lower() for trial in search.trials())
    done = ", ".join(f"{count} {state}" for state, count in sorted(states.items())) or "none started"
    names = ", ".join(param.name for param in search.spec.params)
    return f"optuna search of {search.spec.trials} trial(s) over {names} ({done})"


def search_markdown(table: dict[str, Any]) -> str:
    metric = table["main_metric"] or "metric"
    states = ", ".join(f"{count} {state}" for state, count in sorted(table["states"].items())) or "none started"
    done = table["states"].get("complete", 0) + table["states"].get("pruned", 0)
    lines = [
        f"# Search: {table['method']} on {table['task']}",
        "",
        f"{done} of {table['runs_total']} trials done ({states}); {metric}: best validation of each "
        "finished trial, and test at that checkpoint; the last validation reported for a pruned one.",
        "",
        f"| trial | settings | state | validation {metric} | test {metric} | chosen |",
        "| ---: | --- | --- | ---: | ---: | :---: |",
    ]
    for row in table["points"]:
        validation = row["validation"]["mean"] if row["finished"] else row["value"]
        test = row["test"]["mean"]
        lines.append(
            f"| {row['trial']} | {point_label(row['point'])} | {row['state']} | "
            f"{'-' if validation is None else f'{validation:.2f}'} | {'-' if test is None else f'{test:.2f}'} | "
            f"{'**yes**' if is_chosen(row, table) else ''} |"
        )
    return "\n".join(lines) + "\n"


def collect_any(sweep: Sweep | Search) -> tuple[dict[str, Any], str]:
    """The table of a grid sweep or a search, and its Markdown."""
    if isinstance(sweep, Search):
        table = collect_search(sweep)
        return table, search_markdown(table)
    table = collect(sweep)
    return table, table_markdown(table)


def write_results(sweep: Sweep | Search) -> tuple[dict[str, Any], str]:
    """results.md, results.json and validation.png of a grid sweep or a search."""
    table, markdown = collect_any(sweep)
    write_table(sweep.directory, table, markdown)
    return table, markdown


def chosen_runs(directory: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A sweep's table and the finished runs of its chosen point or trial (for `adept report`)."""
    table, _ = collect_any(open_sweep(directory))
    rows = [row for row in table["points"] if is_chosen(row, table)]
    return table, rows[0]["seeds"] if rows else []
