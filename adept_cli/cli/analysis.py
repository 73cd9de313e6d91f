"""`adept shift-probe` and `adept offsets`: the paper's Tables 1 and 2 as commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from .common import (
    AnySplit,
    Scoring,
    Split,
    check_writable_file,
    console,
    err_console,
    examples,
    fail,
    print_json,
    require_at_least,
    user_errors,
)

SHIFT_EXAMPLES = examples(
    ("The paper's shifts on a run's test split", "adept shift-probe --run runs/rte-dept"),
    ("Chosen shifts, 200 examples, JSON", "adept shift-probe --run runs/rte-adept --shifts 0,25,50 --limit 200 --json"),
    (
        "Three methods in one figure (Table 1)",
        "adept shift-probe --run runs/rte-dept --run runs/rte-adept --run runs/rte-pt --plot shifts.png",
    ),
)
OFFSET_EXAMPLES = examples(
    ("Offset sizes over the training tokens", "adept offsets --run runs/rte-adept"),
    ("The validation split, as JSON", "adept offsets --run runs/rte-adept --split validation --json"),
    ("Offset norms against embedding norms (Table 2)", "adept offsets --run runs/rte-adept --plot offsets.png"),
)


def _load(run: Path, split: str, limit: int | None, scoring: bool = True):
    from dataclasses import replace

    from ..prompt.methods import method_names
    from ..trained import eval_settings, load_from_run, prepare_split

    loaded = load_from_run(run)
    if loaded.method not in method_names():
        fail(
            f"{run} is a {loaded.method} run; this analysis applies to prompt-method runs ({', '.join(method_names())})"
        )
    settings = replace(eval_settings(loaded), limits={split: limit})
    task, rows, encoder = prepare_split(loaded, settings, split, scoring)
    return loaded, task, rows, encoder


def _check_has_offsets(run: Path) -> None:
    """A run of a method that adds no offsets (PT) has nothing to measure: said before any model loads."""
    from ..prompt.methods import get_method, method_names
    from ..run_dir import RunDir
    from ..training.config import load_run_config

    if not RunDir(run).holds_a_run():
        return  # loading names what is wrong with the folder
    method = load_run_config(RunDir(run).config).method
    if method in method_names() and get_method(method).offsets_follow is None:
        with_offsets = [name for name in method_names() if get_method(name).offsets_follow is not None]
        fail(
            f"{run} is a {method} run: {get_method(method).title} adds no offsets to the input, so there is "
            f"nothing to measure; adept offsets reports runs of {', '.join(with_offsets)}"
        )


@user_errors
def shift_probe(
    run: Annotated[
        list[Path], typer.Option("--run", help="Run directory of a pt, dept or adept run; repeat to compare.")
    ],
    shifts: Annotated[str, typer.Option("--shifts", help="Comma-separated shifts (positions).")] = "0,50,100,150,200",
    split: Annotated[Split, typer.Option("--split", help="Which split to score.")] = Split.test,
    limit: Annotated[int | None, typer.Option("--limit", help="Only the first N examples.")] = None,
    scoring: Annotated[Scoring | None, typer.Option("--scoring", help="Default: the run's.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Examples per batch.")] = 32,
    filler: Annotated[
        str | None, typer.Option("--filler", help="Token inserted to shift the input (default: the pad token).")
    ] = None,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Also draw the metric against the shift per run (PNG + JSON).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Robustness to position shifts (the paper's Table 1). DePT: its position offsets are cyclically
    shifted left by each amount. ADePT and PT: that many filler tokens are inserted before the input, and
    for ADePT the offsets of the original tokens are compared (expected difference: 0)."""
    from ..analysis import shift_probe as probe

    require_at_least(1, limit=limit, batch_size=batch_size)
    _check_plot(plot)
    split_name, scoring_name = split.value, scoring.value if scoring else None
    try:
        amounts = [int(s) for s in shifts.split(",") if s.strip()]
    except ValueError:
        fail(f"--shifts must be comma-separated integers, e.g. 0,50,100; got {shifts!r}")
    results = []
    for run_dir in run:
        loaded, task, rows, encoder = _load(run_dir, split_name, limit)
        filler_id = None
        if filler is not None:
            ids = loaded.tokenizer(filler, add_special_tokens=False)["input_ids"]
            if len(ids) != 1:
                fail(f"--filler must be one token; {filler!r} is {len(ids)} tokens")
            filler_id = ids[0]
        with err_console.status(f"probing {run_dir} at shifts {', '.join(map(str, amounts))} ..."):
            result = probe(
                loaded.model,
                encoder,
                task,
                rows,
                amounts,
                scoring_name or loaded.config.scoring,
                batch_size,
                filler_id,
                split=split_name,
            )
        results.append((run_dir, result))
    if plot is not None:
        from ..plots import plot_shift_probe

        data = plot_shift_probe([{"label": d.name, **r.to_dict()} for d, r in results], plot)
        err_console.print(f"wrote {plot} and {data}", highlight=False, soft_wrap=True)
    if as_json:
        dicts = [result.to_dict() for _, result in results]
        print_json(dicts[0] if len(dicts) == 1 else dicts)
        return
    for _, result in results:
        _print_probe(result, split_name)


def _print_probe(result, split_name: str) -> None:
    how = "offsets rolled left" if result.mode == "cyclic offset shift" else f"{result.filler!r} tokens inserted"
    console.print(
        f"{result.method} on {result.task} {split_name} ({result.examples} examples): {how}",
        highlight=False,
        soft_wrap=True,
    )
    table = Table()
    table.add_column("shift", justify="right")
    table.add_column(result.metric, justify="right")
    table.add_column("change", justify="right")
    table.add_column("max |offset change| of original tokens", justify="right")
    for row in result.rows:
        moved = "-" if row.max_offset_change is None else f"{row.max_offset_change:.3g}"
        table.add_row(str(row.shift), f"{row.metric:.2f}", f"{row.change:+.2f}", moved)
    console.print(table)


def _check_plot(plot: Path | None) -> None:
    if plot is not None:
        if plot.suffix.lower() != ".png":
            fail(f"--plot {plot}: expected a .png file")
        check_writable_file(plot, "--plot")


@user_errors
def offsets(
    run: Annotated[Path, typer.Option("--run", help="Run directory of a pt, dept or adept run.")],
    split: Annotated[AnySplit, typer.Option("--split", help="Which split's tokens to measure.")] = AnySplit.train,
    limit: Annotated[int | None, typer.Option("--limit", help="Only the first N examples.")] = None,
    top: Annotated[int, typer.Option("--top", help="How many of the largest token offsets to list (ADePT).")] = 10,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Also draw offset norms against embedding norms (PNG + JSON).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Size of the offsets against the input embeddings (the paper's Table 2): mean and variance of the
    absolute values over every token of a split; for ADePT the number of distinct offsets (one per
    vocabulary token seen) and the largest offsets by token."""
    from ..analysis import offset_statistics

    require_at_least(1, limit=limit, top=top)
    _check_plot(plot)
    _check_has_offsets(run)
    split_name = split.value
    loaded, task, rows, encoder = _load(run, split_name, limit, scoring=False)
    stats = offset_statistics(loaded.model, encoder, rows, top, norms=plot is not None)
    if plot is not None:
        from ..plots import plot_offset_norms

        data = plot_offset_norms(stats, f"{run.name}, {task.name} {split_name}", plot)
        err_console.print(f"wrote {plot} and {data}", highlight=False, soft_wrap=True)
    if as_json:
        print_json({"task": task.name, "split": split_name, **stats.to_dict()})
        return
    console.print(f"{stats.method} on {task.name} {split_name}: {stats.tokens:,} tokens", highlight=False)
    table = Table()
    for column in ("", "mean |.|", "variance of |.|"):
        table.add_column(column, justify="right" if column else "left")
    table.add_row("input embeddings", f"{stats.embedding_abs_mean:.4g}", f"{stats.embedding_abs_var:.4g}")
    if stats.offset_abs_mean is not None:
        table.add_row("offsets", f"{stats.offset_abs_mean:.4g}", f"{stats.offset_abs_var:.4g}")
    console.print(table)
    if stats.distinct_offsets is not None:
        from ..prompt.methods import get_method

        unit = get_method(stats.method).offsets_follow or "positions"  # "tokens" | "positions"
        console.print(f"distinct offsets: {stats.distinct_offsets:,} (one per {unit[:-1]} seen)", highlight=False)
    if stats.largest:
        largest = Table(title="largest offsets by token", title_justify="left")
        for column in ("token", "id", "|offset|", "count"):
            largest.add_column(column)
        for row in stats.largest:
            largest.add_row(repr(row["token"]), str(row["id"]), f"{row['norm']:.4g}", str(row["count"]))
        console.print(largest)
