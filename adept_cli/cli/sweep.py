"""`adept sweep`: runs over a grid of settings and seeds, the best grid point chosen on validation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import console, examples, fail, print_json, user_errors, writable_problem

LAUNCHERS = ("local", "commands")

EXAMPLES = examples(
    (
        "The paper's grid: two prompt and two offset learning rates, three seeds",
        "adept sweep --recipe recipes/t5-base-small-data.yaml --task rte --grid lr_prompt=3e-1,5e-1 "
        "--grid lr_offsets=1e-4,5e-4 --seeds 1,2,3 -o sweeps/rte-adept",
    ),
    ("Continue an interrupted sweep (the same command again)", "adept sweep ... -o sweeps/rte-adept"),
    (
        "On a cluster: write every run's command and a Slurm job array, then collect",
        "adept sweep --recipe r.yaml --grid lr_prompt=3e-1,5e-1 --seeds 1,2,3 -o sweeps/x --launcher commands\n"
        "  sbatch sweeps/x/slurm.sh\n  adept sweep --collect sweeps/x",
    ),
)


@user_errors
def sweep_command(
    overrides: Annotated[list[str] | None, typer.Argument(help="Settings for every run, as key=value.")] = None,
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
        str, typer.Option("--seeds", help="Seeds, comma-separated: one run per grid point and seed.")
    ] = "42",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Sweep folder (default: sweeps/<task>-<method>).")
    ] = None,
    launcher: Annotated[
        str, typer.Option("--launcher", help="local: run here, one after another | commands: write the commands.")
    ] = "local",
    collect: Annotated[
        Path | None, typer.Option("--collect", help="Build the table of the sweep in this folder from finished runs.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the table as JSON on stdout.")] = False,
) -> None:
    """One ordinary run directory per grid point and seed; an interrupted sweep continues where it stopped
    (finished runs skipped, a half-finished run resumed). The best grid point is chosen on validation (mean
    over seeds); results.md / results.json hold mean ± std of the test metric per point, validation.png the
    validation metric against the grid."""
    from .. import sweep as sweeps

    if collect is not None:
        table = sweeps.write_table(sweeps.load(collect))
        _show(table, collect, as_json)
        return
    if launcher not in LAUNCHERS:
        fail(f"--launcher must be one of {', '.join(LAUNCHERS)}; got {launcher!r}")
    settings = list(overrides or [])
    settings += [f"{key}={value}" for key, value in (("task", task), ("method", method), ("model", model)) if value]
    if recipe is not None:
        from ..training.recipes import recipe_file

        recipe = recipe_file(recipe)  # a path, or a name of the recipe catalogue
    parsed_grid, parsed_seeds = sweeps.parse_grid(grid or []), sweeps.parse_seeds(seeds)
    if output is None:
        from ..training.config import build_config

        first = build_config(recipe, None, settings)
        output = Path("sweeps") / f"{first.task_label}-{first.method}"
    problem = writable_problem(output)
    if problem:
        fail(f"-o {output}: {problem}")
    sweep = sweeps.plan(output, recipe, parsed_grid, parsed_seeds, settings)
    console.print(f"sweep {output}: {sweeps.describe_plan(sweep)}", highlight=False, soft_wrap=True)
    if launcher == "commands":
        commands, slurm = sweeps.write_commands(sweep)
        console.print(f"wrote {commands} (one line per run) and {slurm} (sbatch {slurm}); then: "
                      f"adept sweep --collect {output}", highlight=False, soft_wrap=True)  # fmt: skip
        return
    runs = sweep.runs()

    def announce(run: sweeps.SweepRun, status: str) -> None:
        number = runs.index(run) + 1
        action = {"finished": "finished: skipped", "started": "resuming", "new": "starting"}[status]
        console.print(f"[{number}/{len(runs)}] {run.path.name}: {action}", highlight=False, soft_wrap=True)

    try:
        sweeps.run_local(sweep, announce)
    except KeyboardInterrupt:
        sweeps.write_table(sweep)
        fail(f"interrupted; the same command continues the sweep ({output})", code=130)
    _show(sweeps.write_table(sweep), output, as_json)


def _show(table: dict, folder: Path, as_json: bool) -> None:
    from ..sweep import PLOT, TABLE_JSON, TABLE_MD, table_markdown

    if as_json:
        print_json(table)
        return
    console.print(table_markdown(table), highlight=False, soft_wrap=True)
    written = [folder / TABLE_MD, folder / TABLE_JSON] + ([folder / PLOT] if table["runs_finished"] else [])
    console.print("wrote " + ", ".join(map(str, written)), highlight=False, soft_wrap=True)
