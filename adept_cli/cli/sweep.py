"""`adept sweep`: runs over a grid of settings and seeds, or an Optuna search, each run an ordinary run
directory; the best grid point or trial chosen on validation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from .common import console, err_console, examples, fail, print_json, user_errors, writable_problem

LAUNCHERS = ("here", "local", "slurm", "commands")

EXAMPLES = examples(
    (
        "The paper's grid: two prompt and two offset learning rates, three seeds",
        "adept sweep --recipe recipes/t5-base-small-data.yaml --task rte --grid lr_prompt=3e-1,5e-1 "
        "--grid lr_offsets=1e-4,5e-4 --seeds 1,2,3 -o sweeps/rte-adept",
    ),
    ("Continue an interrupted sweep or search (the same command again)", "adept sweep ... -o sweeps/rte-adept"),
    (
        "An Optuna search (TPE, median pruning) from a sweep file with search: optuna (docs/sweeps.md)",
        "adept sweep --file search.yaml -o sweeps/rte-search",
    ),
    (
        "On Slurm through submitit: one job per run or trial, then collect",
        "adept sweep --file search.yaml -o sweeps/x --launcher slurm --partition gpu --gpus 1 --time 120\n"
        "  adept sweep --collect sweeps/x",
    ),
    (
        "For other schedulers: write every run's command (and a Slurm job array)",
        "adept sweep --recipe r.yaml --grid lr_prompt=3e-1,5e-1 -o sweeps/x --launcher commands",
    ),
)


@user_errors
def sweep_command(
    overrides: Annotated[list[str] | None, typer.Argument(help="Settings for every run, as key=value.")] = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            "-f",
            help="Sweep file (YAML): recipe, settings, grid and seeds, or search: optuna "
            "with params and trials; slurm: job settings. Flags add to it.",
        ),  # fmt: skip
    ] = None,
    recipe: Annotated[
        Path | None,
        typer.Option("--recipe", "-r", help="YAML recipe every run starts from (a path or a name: adept recipes)."),
    ] = None,
    task: Annotated[str | None, typer.Option("--task", "-t", help="Task for every run.")] = None,
    method: Annotated[str | None, typer.Option("--method", help="Method for every run.")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Base model for every run.")] = None,
    grid: Annotated[
        list[str] | None, typer.Option("--grid", "-g", help="KEY=V1,V2,...: one axis of the grid; repeat for more.")
    ] = None,
    seeds: Annotated[
        str | None, typer.Option("--seeds", help="Seeds, comma-separated: one run per grid point and seed [42].")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Sweep folder (default: sweeps/<task>-<method>[-search]).")
    ] = None,
    launcher: Annotated[
        str,
        typer.Option(
            "--launcher",
            help="here: in this process, one after another | local: submitit jobs on this "
            "machine | slurm: submitit jobs on Slurm | commands: write the commands.",
        ),  # fmt: skip
    ] = "here",
    partition: Annotated[str | None, typer.Option("--partition", help="Slurm partition of each job.")] = None,
    gpus: Annotated[int | None, typer.Option("--gpus", help="GPUs per job (slurm, local).", min=0)] = None,
    time: Annotated[int | None, typer.Option("--time", help="Minutes each job may run [1440].", min=1)] = None,
    parallel: Annotated[
        int | None, typer.Option("--parallel", help="Jobs at once (local: 1; slurm: the array's limit).", min=1)
    ] = None,
    collect: Annotated[
        Path | None, typer.Option("--collect", help="Build the table of the sweep in this folder from finished runs.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the table (slurm: the jobs submitted) as JSON on stdout.")
    ] = False,
) -> None:
    """One ordinary run directory per grid point and seed, or per trial of an Optuna search; an interrupted
    sweep continues where it stopped (finished runs skipped, a half-finished run resumed from its
    checkpoint). The best grid point (mean over seeds) or trial is chosen on validation; results.md /
    results.json hold the test metric of each, validation.png the validation metric."""
    from .. import search as searches
    from .. import sweep as sweeps

    out = err_console if as_json else console  # with --json, stdout holds the JSON alone

    if collect is not None:
        table, markdown = searches.write_results(searches.open_sweep(collect))
        _show(table, markdown, collect, as_json)
        return
    if launcher not in LAUNCHERS:
        fail(f"--launcher must be one of {', '.join(LAUNCHERS)}; got {launcher!r}")
    from ..sweep_file import read_sweep_file

    planned = read_sweep_file(file) if file is not None else {"settings": [], "grid": {}, "slurm": {}}
    settings = [*planned["settings"], *(overrides or [])]
    settings += [f"{key}={value}" for key, value in (("task", task), ("method", method), ("model", model)) if value]
    recipe = _recipe(recipe, planned.get("recipe"), file)
    seed_list = sweeps.parse_seeds(seeds) if seeds is not None else planned.get("seeds") or [42]
    spec = planned.get("search")
    if spec is not None:
        searches.import_optuna()  # one line, before anything is planned, when the [search] extra is missing
    if launcher in ("local", "slurm"):
        from ..launch import import_submitit

        import_submitit()  # one line when the [cluster] extra is missing
    if spec is not None:
        if launcher == "commands":
            fail("--launcher commands writes grid runs; a search runs as `adept sweep --file ... -o ...` on each "
                 "machine sharing its storage, or with --launcher slurm / local")  # fmt: skip
        if grid:
            fail(f"--grid: {file} holds a search (search: optuna); its params are what is searched")
        if len(seed_list) != 1:
            fail("a search runs one seed per trial; give one seed (--seeds 7), or search seed-free settings")
        settings.append(f"seed={seed_list[0]}")
    output = output or _default_folder(recipe, settings, "-search" if spec is not None else "")
    problem = writable_problem(output)
    if problem:
        fail(f"-o {output}: {problem}")
    if spec is not None:
        sweep: Any = searches.plan_search(output, recipe, spec, settings)
        out.print(f"search {output}: {searches.describe_search(sweep)}", highlight=False, soft_wrap=True)
    else:
        axes = [f"{key}={values}" for key, values in planned["grid"].items()] + list(grid or [])
        sweep = sweeps.plan(output, recipe, sweeps.parse_grid(axes), seed_list, settings)
        out.print(f"sweep {output}: {sweeps.describe_plan(sweep)}", highlight=False, soft_wrap=True)
    if launcher in ("local", "slurm"):
        try:
            _launch(out, sweep, launcher, planned["slurm"], file, dict(partition=partition, gpus=gpus, time=time,
                                                                   parallel=parallel), as_json)  # fmt: skip
        except KeyboardInterrupt:
            searches.write_results(sweep)
            fail(f"interrupted; the jobs were stopped and the same command continues the sweep ({output})", code=130)
        return
    if launcher == "commands":
        commands, slurm = sweeps.write_commands(sweep)
        out.print(f"wrote {commands} (one line per run) and {slurm} (sbatch {slurm}); then: "
                      f"adept sweep --collect {output}", highlight=False, soft_wrap=True)  # fmt: skip
        return
    try:
        if spec is not None:
            searches.run_trials(sweep, announce=lambda *event: _announce_trial(out, *event))
        else:
            runs = sweep.runs()

            def announce(run: sweeps.SweepRun, status: str) -> None:
                action = {"finished": "finished: skipped", "started": "resuming", "new": "starting"}[status]
                out.print(f"[{runs.index(run) + 1}/{len(runs)}] {run.path.name}: {action}", highlight=False,
                              soft_wrap=True)  # fmt: skip

            sweeps.run_local(sweep, announce)
    except KeyboardInterrupt:
        searches.write_results(sweep)
        fail(f"interrupted; the same command continues the sweep ({output})", code=130)
    table, markdown = searches.write_results(sweep)
    _show(table, markdown, output, as_json)


def _recipe(flag: Path | None, from_file: str | None, file: Path | None) -> Path | None:
    """--recipe, else the sweep file's recipe (a path beside the file, or a catalogue name)."""
    from ..training.recipes import recipe_file

    if flag is not None:
        return recipe_file(flag)
    if from_file is None:
        return None
    beside = file.parent / from_file if file is not None else Path(from_file)
    return recipe_file(beside if beside.exists() else from_file)


def _default_folder(recipe: Path | None, settings: list[str], suffix: str) -> Path:
    from ..training.config import build_config

    first = build_config(recipe, None, settings)
    return Path("sweeps") / f"{first.task_label}-{first.method}{suffix}"


def _announce_trial(out: Any, number: int, folder: Path, event: str, values: dict[str, Any]) -> None:
    from ..sweep_file import setting

    chosen = ", ".join(f"{key}={setting(value)}" for key, value in values.items())
    out.print(f"trial {number} ({folder.name}): {event} ({chosen})", highlight=False, soft_wrap=True, markup=False)


def _launch(out: Any, sweep: Any, launcher: str, section: dict, file: Path | None, flags: dict, as_json: bool) -> None:
    from .. import launch, search

    settings = launch.JobSettings.merged(section, flags, f"{file} slurm" if file else "job settings")
    if launcher == "slurm":
        submitted = launch.submit_slurm(sweep, settings)
        if as_json:
            print_json({"submitted": submitted})
            return
        if not submitted:
            out.print("nothing left to submit: every run has finished", highlight=False)
            return
        out.print(f"submitted {len(submitted)} job(s) to Slurm ({submitted[0]['job']} ...; ids in "
                      f"{launch.JOBS_DIR}/*/{launch.JOBS_FILE}); when they end: adept sweep "
                      f"--collect {sweep.directory}", highlight=False, soft_wrap=True)  # fmt: skip
        return
    failures = launch.run_local_jobs(
        sweep, settings, lambda unit, event: out.print(f"{unit}: {event}", highlight=False, soft_wrap=True)
    )
    table, markdown = search.write_results(sweep)
    if failures:
        fail(f"{len(failures)} job(s) failed; the same command runs what is left: " + "; ".join(failures))
    _show(table, markdown, sweep.directory, as_json)


def _show(table: dict, markdown: str, folder: Path, as_json: bool) -> None:
    from ..sweep import PLOT, TABLE_JSON, TABLE_MD

    if as_json:
        print_json(table)
        return
    console.print(markdown, highlight=False, soft_wrap=True)
    written = [folder / TABLE_MD, folder / TABLE_JSON] + ([folder / PLOT] if table["runs_finished"] else [])
    console.print("wrote " + ", ".join(map(str, written)), highlight=False, soft_wrap=True)
