"""A sweep's runs, or a search's trials, as jobs through submitit: on Slurm (`--launcher slurm`, one job
array, submitted and left to the scheduler) or as processes on this machine (`--launcher local`, submitit's
local executor, at most `parallel` at once, waited for).

Each job reads the plan from the sweep folder and does what the in-process launcher does for one unit: a
grid run is skipped when finished and resumed when started; a search job runs one trial of the shared study
(an interrupted trial first, from its checkpoint). So resubmitting a sweep submits only what is left, and a
job that runs twice on one run folder is refused by the run's lock, not run twice.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .files import write_json_atomic
from .search import Search, open_sweep, run_trials
from .sweep import Sweep, SweepError, run_one
from .sweep_file import is_number, is_whole

JOBS_DIR, JOBS_FILE = "jobs", "jobs.json"
SUBMITIT_LOG_VARIABLE = "SUBMITIT_LOG_LEVEL"
DEFAULT_MINUTES = 24 * 60


@dataclass(frozen=True)
class JobSettings:
    """What each job asks of the scheduler (flags, else the sweep file's `slurm:` section)."""

    partition: str | None = None
    gpus: int = 0
    time: int = DEFAULT_MINUTES  # minutes
    cpus: int | None = None
    mem_gb: float | None = None
    parallel: int | None = None  # jobs at once (local: 1 unless given)
    setup: tuple[str, ...] = ()  # shell lines before each job (module load ..., source venv)
    additional: dict[str, Any] = field(default_factory=dict)  # further #SBATCH options

    @classmethod
    def merged(cls, section: dict[str, Any], flags: dict[str, Any], where: str) -> JobSettings:
        """The sweep file's section with the flags given on top; each value checked."""
        values = {**section, **{key: value for key, value in flags.items() if value is not None}}
        for key in ("gpus", "time", "cpus", "parallel"):
            value = values.get(key)
            if value is not None and (not is_whole(value) or value < 0):
                raise SweepError(f"{where}: {key} must be a whole number >= 0; got {value!r}")
        if values.get("time") == 0 or values.get("parallel") == 0:
            raise SweepError(f"{where}: time and parallel must be >= 1")
        if (values.get("gpus") or 0) > 1:  # a job trains in its one process: more GPUs would sit idle
            raise SweepError(
                f"{where}: gpus {values['gpus']}: each job trains one run in one process (one GPU); "
                "for runs on several GPUs write the commands (--launcher commands: accelerate launch)"
            )
        mem = values.get("mem_gb")
        if mem is not None and (not is_number(mem) or mem <= 0):
            raise SweepError(f"{where}: mem_gb must be a number > 0")
        setup = values.get("setup", [])
        if not isinstance(setup, list) or not all(isinstance(line, str) for line in setup):
            raise SweepError(f"{where}: setup must be a list of shell lines")
        additional = values.get("additional", {})
        if not isinstance(additional, dict):
            raise SweepError(f"{where}: additional must map #SBATCH options to values (e.g. account: my-lab)")
        partition = values.get("partition")
        if partition is not None and not isinstance(partition, str):
            raise SweepError(f"{where}: partition must be a name")
        return cls(
            partition, values.get("gpus", 0), values.get("time") or DEFAULT_MINUTES, values.get("cpus"),
            mem, values.get("parallel"), tuple(setup), dict(additional),
        )  # fmt: skip


# -- what one job runs (top-level, so that submitit pickles them by name) ------------------------------


def grid_job(directory: str, folder_name: str) -> str:
    """One run of a grid sweep: skipped when finished, resumed when started."""
    from .hf import reuse_loaded_models

    sweep = open_sweep(directory)
    assert isinstance(sweep, Sweep)
    for run in sweep.runs():
        if run.path.name == folder_name:
            with reuse_loaded_models():
                run_one(run, sweep.config_of(run))
            return run.status()
    raise SweepError(f"{directory}: the sweep has no run {folder_name}")


def trial_job(directory: str) -> str:
    """One trial of a search (an interrupted one first)."""
    search = open_sweep(directory)
    assert isinstance(search, Search)
    run_trials(search, count=1)
    return "done"


# -- submitting ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Unit:
    label: str  # the run's folder name, or "trial"
    function: Callable[..., str]
    arguments: tuple[str, ...]


def units(sweep: Sweep | Search) -> list[Unit]:
    """What is left to run: the grid's unfinished runs, or the search's trials still to start (interrupted
    ones queued to continue first)."""
    directory = str(sweep.directory.resolve())
    if isinstance(sweep, Search):
        _, left = sweep.open_study()
        return [Unit(f"trial {k + 1} of {left}", trial_job, (directory,)) for k in range(left)]
    return [
        Unit(run.path.name, grid_job, (directory, run.path.name)) for run in sweep.runs() if run.status() != "finished"
    ]


def jobs_folder(sweep: Sweep | Search) -> Path:
    """A new folder for this submission's job files: submitit unpickles a job's result from its folder, so
    no file a sweep folder arrived with (or an earlier job of the same id left) can be read as one."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return sweep.directory.resolve() / JOBS_DIR / f"{stamp}-{secrets.token_hex(3)}"


def import_submitit() -> Any:
    """submitit, imported without its logging set-up: on import it calls `logging.config.dictConfig`,
    which closes every logging handler the host process has (a program using adept as a library, or
    pytest's own capture). Its jobs, processes of their own, configure their logging as usual."""
    before = os.environ.get(SUBMITIT_LOG_VARIABLE)
    os.environ[SUBMITIT_LOG_VARIABLE] = "NOCONFIG"
    try:
        import submitit
        import submitit.helpers
    except ImportError:
        raise SweepError("--launcher local and slurm need submitit: pip install 'adept-cli[cluster]'") from None
    finally:
        if before is None:
            os.environ.pop(SUBMITIT_LOG_VARIABLE)
        else:
            os.environ[SUBMITIT_LOG_VARIABLE] = before
    return submitit


def executor(launcher: str, folder: Path, settings: JobSettings, name: str) -> Any:
    submitit = import_submitit()
    executor = submitit.AutoExecutor(folder=folder, cluster=launcher)
    shared: dict[str, Any] = {"timeout_min": settings.time, "gpus_per_node": settings.gpus, "name": name}
    if settings.cpus is not None:
        shared["cpus_per_task"] = settings.cpus
    if settings.mem_gb is not None:
        shared["mem_gb"] = settings.mem_gb
    if launcher == "slurm":
        if settings.partition is not None:
            shared["slurm_partition"] = settings.partition
        if settings.parallel is not None:
            shared["slurm_array_parallelism"] = settings.parallel
        if settings.setup:
            shared["slurm_setup"] = list(settings.setup)
        if settings.additional:
            shared["slurm_additional_parameters"] = settings.additional
    elif settings.setup:
        shared["local_setup"] = list(settings.setup)
    executor.update_parameters(**shared)
    return executor


def submit_slurm(sweep: Sweep | Search, settings: JobSettings) -> list[dict[str, str]]:
    """Every unit as one task of a Slurm job array; the job ids written to jobs/jobs.json."""
    todo = units(sweep)
    if not todo:
        return []
    folder = jobs_folder(sweep)
    try:
        slurm = executor("slurm", folder / "%j", settings, f"adept-{sweep.directory.resolve().name}")
    except RuntimeError as error:  # submitit looks for srun first
        raise SweepError(f"--launcher slurm: {error} Run adept on a Slurm login node, or write the commands for "
                         "another scheduler with --launcher commands") from None  # fmt: skip
    try:
        with slurm.batch():
            jobs = [slurm.submit(unit.function, *unit.arguments) for unit in todo]
    except Exception as error:  # sbatch missing or refusing: its own words
        raise SweepError(f"submitting to Slurm failed: {str(error).strip()[:600]}") from None
    submitted = [{"job": job.job_id, "unit": unit.label} for job, unit in zip(jobs, todo)]
    write_json_atomic(folder / JOBS_FILE, submitted)
    return submitted


def run_local_jobs(
    sweep: Sweep | Search, settings: JobSettings, on_event: Callable[[str, str], None] | None = None
) -> list[str]:
    """Every unit as a local process (at most `parallel` at once), waited for; returns what failed, each
    with the log that says why (one failure does not stop the others)."""
    as_completed = import_submitit().helpers.as_completed
    todo = units(sweep)
    local = executor("local", jobs_folder(sweep) / "%j", settings, f"adept-{sweep.directory.resolve().name}")
    at_once = settings.parallel or 1
    failures: list[str] = []
    active: dict[Any, Unit] = {}
    try:
        while todo or active:
            while todo and len(active) < at_once:
                unit = todo.pop(0)
                job = local.submit(unit.function, *unit.arguments)
                active[job] = unit
                if on_event is not None:
                    on_event(unit.label, f"job {job.job_id} started")
            job = next(as_completed(list(active), poll_frequency=0.2))
            failure = _outcome(job, active.pop(job), on_event)
            if failure:
                failures.append(failure)
    except KeyboardInterrupt:  # the jobs would outlive this process: each is stopped (and checkpoints) first
        for job in active:
            job.cancel(check=False)
        for _ in as_completed(list(active), poll_frequency=0.2):
            pass
        raise
    return failures


def _outcome(job: Any, unit: Unit, on_event: Callable[[str, str], None] | None) -> str | None:
    """None when the job succeeded, else what failed and the log that says why."""
    try:
        job.result()
    except Exception as error:  # the job's exception, re-raised by submitit with its traceback as text
        why = (str(error).strip().splitlines() or ["(no message)"])[-1]
        if on_event is not None:
            on_event(unit.label, f"job {job.job_id} failed")
        return f"{unit.label}: {why[:300]} (log: {job.paths.stderr})"
    if on_event is not None:
        on_event(unit.label, f"job {job.job_id} done")
    return None
