"""Sweeps: one ordinary run directory per grid point and seed, as the paper's protocol asks (a grid of
learning rates, several seeds, the best grid point chosen on validation, mean and spread on test).

```
<sweep>/sweep.json          the plan: recipe, overrides, grid, seeds, every run's folder
<sweep>/runs/<point>_seed-S/ an ordinary run directory each
<sweep>/results.md|json     the table: mean +- std per grid point, the chosen point
<sweep>/validation.png      validation metric against the grid point (every seed, mean +- std)
<sweep>/commands.txt        --launcher commands: one `accelerate launch ... train` line per run
<sweep>/slurm.sh            --launcher commands: a Slurm job array running those lines
```

Planning, collecting and writing the table import neither torch nor transformers; running imports the
training loop. An interrupted sweep continues where it stopped: finished runs (results.json) are
skipped, a run with a config but no results is resumed from its newest checkpoint, the rest start.
"""

from __future__ import annotations

import itertools
import re
import shlex
import statistics
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import AdeptError
from .files import read_json_object, write_json_atomic, write_text_atomic
from .run_dir import RunDir

SWEEP_FILE = "sweep.json"
SWEEP_FORMAT_VERSION = 1
RUNS_DIR = "runs"
TABLE_MD, TABLE_JSON, PLOT = "results.md", "results.json", "validation.png"
COMMANDS, SLURM = "commands.txt", "slurm.sh"
# Settings a grid or the sweep itself decides: a grid over them would collide with the sweep's layout.
RESERVED = ("seed", "output_dir")


class SweepError(AdeptError, ValueError):
    """A sweep cannot be planned, continued or collected; the message says what to change."""


def parse_grid(items: list[str]) -> dict[str, list[str]]:
    """`["lr_prompt=3e-1,5e-1", "lr_offsets=1e-4"]` -> {"lr_prompt": ["3e-1", "5e-1"], ...}."""
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip().replace("-", "_")
        choices = [value.strip() for value in values.split(",") if value.strip()]
        if not sep or not key or not choices:
            raise SweepError(f"--grid {item!r}: expected KEY=V1,V2,... (e.g. lr_prompt=3e-1,5e-1)")
        if key in RESERVED:
            raise SweepError(f"--grid {item!r}: {key} is set by the sweep itself (use --seeds for seeds)")
        if key in grid:
            raise SweepError(f"--grid {key} is given twice; list every value in one --grid")
        if len(set(choices)) != len(choices):
            raise SweepError(f"--grid {item!r}: a value is repeated")
        grid[key] = choices
    return grid


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SweepError(f"--seeds {text!r}: expected integers separated by commas (e.g. 1,2,3)") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise SweepError(f"--seeds {text!r}: give one or more distinct seeds")
    return seeds


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_") or "_"


@dataclass(frozen=True)
class SweepRun:
    point: tuple[tuple[str, str], ...]  # the grid values of this run, in grid order
    seed: int
    path: Path

    @property
    def settings(self) -> list[str]:
        return [f"{key}={value}" for key, value in self.point] + [f"seed={self.seed}"]

    def status(self) -> str:
        return RunDir(self.path).status()


@dataclass(frozen=True)
class Sweep:
    directory: Path
    recipe: str | None
    overrides: tuple[str, ...]
    grid: dict[str, list[str]]
    seeds: tuple[int, ...]

    def points(self) -> list[tuple[tuple[str, str], ...]]:
        keys = list(self.grid)
        return [tuple(zip(keys, values)) for values in itertools.product(*(self.grid[k] for k in keys))]

    def runs(self) -> list[SweepRun]:
        out = []
        for point in self.points():
            name = "_".join(f"{key}-{_slug(value)}" for key, value in point)
            for seed in self.seeds:
                folder = f"{name}_seed-{seed}" if name else f"seed-{seed}"
                out.append(SweepRun(point, seed, self.directory / RUNS_DIR / folder))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": SWEEP_FORMAT_VERSION,
            "recipe": self.recipe,
            "overrides": list(self.overrides),
            "grid": self.grid,
            "seeds": list(self.seeds),
            "runs": [str(run.path.relative_to(self.directory)) for run in self.runs()],
        }

    def config_of(self, run: SweepRun) -> Any:
        from .training import build_config

        return build_config(self.recipe, None, [*self.overrides, *run.settings, f"output_dir={run.path}"])

    def configs(self) -> list[Any]:
        """Every run's validated config (a bad setting fails the sweep before any run starts)."""
        from .training import TrainConfigError

        configs, problems = [], []
        for run in self.runs():
            try:
                configs.append(self.config_of(run))
            except TrainConfigError as error:
                problems.append(f"{run.path.name}: {error}")
        if problems:
            raise SweepError("; ".join(dict.fromkeys(problems)))
        return configs


def plan(
    directory: str | Path, recipe: str | Path | None, grid: dict[str, list[str]], seeds: list[int], overrides: list[str]
) -> Sweep:
    """A new sweep, or the same sweep again (to continue it); a folder holding another sweep is refused."""
    directory = Path(directory)
    recipe_path = str(Path(recipe).resolve()) if recipe is not None else None
    sweep = Sweep(directory, recipe_path, tuple(overrides), grid, tuple(seeds))
    sweep.configs()
    kept = ("recipe", "overrides", "grid", "seeds")
    what = "recipe, grid, seeds and settings"
    save_plan(directory, sweep.to_dict(), lambda plan: {k: plan.get(k) for k in kept}, what)
    return sweep


def save_plan(directory: Path, plan: dict[str, Any], kept: Callable[[dict], Any], what: str) -> None:
    """Write `plan` as the folder's sweep.json: into a new or empty folder, or over the same plan (`kept`
    picks what must not change between the two; `what` names it for the user)."""
    saved = directory / SWEEP_FILE
    if saved.is_file():
        if kept(read_json_object(saved, SweepError, "a sweep plan")) != kept(plan):
            raise SweepError(f"{directory} holds another sweep (its {SWEEP_FILE} differs); continue it with the same "
                             f"{what}, or choose another -o")  # fmt: skip
    elif directory.exists() and not directory.is_dir():
        raise SweepError(f"{directory} is a file; -o takes a folder")
    elif directory.exists() and any(directory.iterdir()):
        raise SweepError(f"{directory} is not empty and holds no {SWEEP_FILE}; choose another -o")
    directory.mkdir(parents=True, exist_ok=True)
    write_json_atomic(saved, plan)


def read_plan(directory: Path) -> dict[str, Any]:
    """The folder's sweep.json (a grid sweep's or a search's), of a format this adept reads."""
    path = directory / SWEEP_FILE
    if not path.is_file():
        raise SweepError(f"{directory} is not a sweep (no {SWEEP_FILE})")
    data = read_json_object(path, SweepError, "a sweep plan")
    version = data.get("format_version")
    if not isinstance(version, int) or version > SWEEP_FORMAT_VERSION:
        raise SweepError(f"{path}: format_version {version!r} is newer than this adept reads; upgrade adept-cli")
    return data


def load(directory: str | Path, data: dict[str, Any] | None = None) -> Sweep:
    """The grid sweep planned in `directory` (from its sweep.json, or from `data` already read from it)."""
    directory = Path(directory)
    data = read_plan(directory) if data is None else data
    try:
        return Sweep(directory, data["recipe"], tuple(data["overrides"]), data["grid"], tuple(data["seeds"]))
    except (KeyError, TypeError):
        raise SweepError(f"{directory / SWEEP_FILE}: not a sweep plan written by adept") from None


def run_local(sweep: Sweep, on_run: Callable[[SweepRun, str], None] | None = None) -> None:
    """Every run in this process, one after another; finished runs skipped, started ones resumed. The runs
    read the base model once (each trains its own copy)."""
    from .hf import reuse_loaded_models

    with reuse_loaded_models():
        for run, config in zip(sweep.runs(), sweep.configs()):
            if on_run is not None:
                on_run(run, run.status())
            run_one(run, config)


def run_one(run: SweepRun, config: Any) -> None:
    """One run of a sweep: skipped when finished, resumed from its newest checkpoint when started."""
    from .training import train

    status = run.status()
    if status != "finished":
        train(config, resume="auto" if status == "started" else None)


def write_commands(sweep: Sweep) -> tuple[Path, Path]:
    """commands.txt (one `accelerate launch` line per run) and slurm.sh (a job array over those lines)."""
    lines = []
    for run in sweep.runs():
        words = ["accelerate", "launch", "-m", "adept_cli", "train"]
        if sweep.recipe is not None:
            words += ["--recipe", sweep.recipe]
        words += ["--output-dir", str(run.path.resolve()), "--resume", "auto", *sweep.overrides, *run.settings]
        lines.append(shlex.join(words))
    commands = sweep.directory / COMMANDS
    write_text_atomic(commands, "\n".join(lines) + "\n")
    script = "\n".join(
        [
            "#!/usr/bin/env bash",
            f"#SBATCH --job-name=adept-sweep-{_slug(sweep.directory.resolve().name)}",
            f"#SBATCH --array=0-{len(lines) - 1}",
            f"#SBATCH --output={sweep.directory.resolve()}/slurm-%A_%a.out",
            "# Each array task runs one line of commands.txt; a rerun of the array resumes or skips finished runs.",
            "set -euo pipefail",
            f'line="$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" {shlex.quote(str(commands.resolve()))})"',
            'eval "$line"',
            "",
        ]
    )
    slurm = sweep.directory / SLURM
    write_text_atomic(slurm, script)
    slurm.chmod(0o755)
    return commands, slurm


# -- collecting -------------------------------------------------------------------------------------


def stats(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}  # fmt: skip


def collect(sweep: Sweep) -> dict[str, Any]:
    """Per grid point: every seed's best validation and test main metric, their mean and std; the chosen
    point (the best mean validation metric among points whose seeds all finished, else among any)."""
    rows, metric, task, method = [], None, None, None
    runs = sweep.runs()
    for point in sweep.points():
        seeds = []
        for run in (r for r in runs if r.point == point):
            results = RunDir(run.path).read_results()
            if results is None:
                continue
            metric, task, method = results["main_metric"], results["task"], results["method"]
            seeds.append(run_row(results, run.path, run.seed))
        rows.append(
            {
                "point": dict(point),
                "finished": len(seeds),
                "seeds": seeds,
                "validation": stats([s["validation"] for s in seeds]),
                "test": stats([s["test"] for s in seeds]),
            }
        )
    complete = [row for row in rows if row["finished"] == len(sweep.seeds)]
    candidates = complete or [row for row in rows if row["finished"]]
    chosen = max(candidates, key=lambda row: row["validation"]["mean"]) if candidates else None
    return {
        "task": task,
        "method": method,
        "main_metric": metric,
        "grid": sweep.grid,
        "seeds": list(sweep.seeds),
        "points": rows,
        "chosen": chosen["point"] if chosen else None,
        "chosen_complete": bool(complete),
        "runs_finished": sum(row["finished"] for row in rows),
        "runs_total": len(runs),
    }


def is_chosen(row: dict[str, Any], table: dict[str, Any]) -> bool:
    """The chosen row of a sweep's table: its grid point, or (in a search, where two trials may draw the same
    settings) its trial."""
    return row["point"] == table["chosen"] and row.get("trial") == table.get("chosen_trial")


def run_row(results: dict[str, Any], folder: Path, seed: int) -> dict[str, Any]:
    """A finished run as a row of a sweep's table: its seed, best validation and test main metric."""
    metric = results["main_metric"]
    return {
        "seed": seed,
        "run": str(folder),
        "validation": results["validation"][metric],
        "test": results["test"][metric],
        "trainable_params": results.get("trainable_params"),
    }


def point_label(point: dict[str, str]) -> str:
    return ", ".join(f"{key}={value}" for key, value in point.items()) or "(no grid)"


def _cell(stats: dict[str, Any]) -> str:
    return "-" if stats["mean"] is None else f"{stats['mean']:.2f} ± {stats['std']:.2f}"


def table_markdown(table: dict[str, Any]) -> str:
    metric = table["main_metric"] or "metric"
    lines = [
        f"# Sweep: {table['method']} on {table['task']}",
        "",
        f"{table['runs_finished']} of {table['runs_total']} runs finished; seeds {table['seeds']}; "
        f"{metric}: best validation of each run, and test at that checkpoint (mean ± std over seeds).",
        "",
        f"| grid point | seeds finished | validation {metric} | test {metric} | chosen |",
        "| --- | ---: | ---: | ---: | :---: |",
    ]
    for row in table["points"]:
        chosen = "**yes**" if is_chosen(row, table) else ""
        lines.append(
            f"| {point_label(row['point'])} | {row['finished']} / {len(table['seeds'])} | "
            f"{_cell(row['validation'])} | {_cell(row['test'])} | {chosen} |"
        )
    if table["chosen"] is not None and not table["chosen_complete"]:
        lines += ["", "Chosen among incomplete grid points: not every seed of any point has finished yet."]
    return "\n".join(lines) + "\n"


def plot(table: dict[str, Any], path: Path) -> None:
    """The validation metric of every seed against the grid point, mean ± std, the chosen point marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = table["points"]
    figure, axes = plt.subplots(figsize=(max(4.0, 1.4 * len(rows) + 2), 3.6))
    for x, row in enumerate(rows):
        values = [seed["validation"] for seed in row["seeds"]]
        axes.scatter([x] * len(values), values, color="tab:gray", s=16, zorder=2)
        if values:
            stats = row["validation"]
            color = "tab:red" if is_chosen(row, table) else "tab:blue"
            axes.errorbar(x, stats["mean"], yerr=stats["std"], fmt="o", color=color, capsize=4, zorder=3)
    axes.set_xticks(range(len(rows)))
    labels = [row.get("label") or point_label(row["point"]).replace(", ", "\n") for row in rows]
    axes.set_xticklabels(labels, fontsize=8)
    axes.set_ylabel(f"validation {table['main_metric']}")
    axes.set_title(f"{table['method']} on {table['task']}: mean ± std over seeds (red: chosen)", fontsize=9)
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_table(directory: Path, table: dict[str, Any], markdown: str) -> dict[str, Any]:
    """results.md, results.json and validation.png in the sweep folder; returns the table."""
    write_text_atomic(directory / TABLE_MD, markdown)
    write_json_atomic(directory / TABLE_JSON, table)
    if table["runs_finished"]:
        plot(table, directory / PLOT)
    return table


def describe_plan(sweep: Sweep) -> str:
    runs = sweep.runs()
    counts = Counter(run.status() for run in runs)
    done = ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))
    return f"{len(sweep.points())} grid point(s) x {len(sweep.seeds)} seed(s) = {len(runs)} runs ({done})"
