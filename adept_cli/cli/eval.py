"""`adept eval`: metrics of a run, a saved adapter, or the base model alone on a task split."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from .common import console, examples, fail, print_json, user_errors

EXAMPLES = examples(
    ("The best adapter of a run on its test split", "adept eval --run runs/rte-adept"),
    ("The validation split, as JSON", "adept eval --run runs/rte-adept --split validation --json"),
    ("A saved adapter on a task", "adept eval --adapter my-adapter --task rte --predictions preds.jsonl"),
    ("The base model zero-shot", "adept eval --model smollm2-135m --task sst2 --scoring rank"),
    ("Several processes", "accelerate launch -m adept_cli eval --run runs/rte-adept"),
)


@user_errors
def eval_command(
    run: Annotated[Path | None, typer.Option("--run", help="Run directory written by adept train.")] = None,
    adapter: Annotated[Path | None, typer.Option("--adapter", help="Adapter directory (adept or PEFT).")] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Base model (default: the adapter's or the run's).")
    ] = None,
    task: Annotated[str | None, typer.Option("--task", "-t", help="Task (default: the run's).")] = None,
    split: Annotated[str, typer.Option("--split", help="validation | test.")] = "test",
    scoring: Annotated[
        str | None, typer.Option("--scoring", help="generate | rank (default: the run's, else generate).")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Examples per batch, per process.")] = 32,
    limit: Annotated[int | None, typer.Option("--limit", help="Only the first N examples.")] = None,
    data_dir: Annotated[str | None, typer.Option("--data-dir", help="Folder with <task>/<split> files.")] = None,
    predictions: Annotated[
        Path | None, typer.Option("--predictions", help="Write one JSON line per example here.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
) -> None:
    """Evaluate on a task split: generation + string match (as the paper) or rank classification."""
    from ..runs import evaluate_loaded, load_base, load_from_adapter, load_from_run
    from ..training.loop import make_accelerator, write_predictions

    if run is not None and adapter is not None:
        fail("give --run or --adapter, not both")
    if split not in ("validation", "test"):
        fail(f"--split must be validation or test; got {split!r}")
    if scoring not in (None, "generate", "rank"):
        fail(f"--scoring must be generate or rank; got {scoring!r}")
    if run is None and task is None:
        fail("--task is required without --run")
    accelerator = make_accelerator()
    if run is not None:
        loaded = load_from_run(run)
    elif adapter is not None:
        loaded = load_from_adapter(adapter, model)
    else:
        loaded = load_base(model)
    result, rows = evaluate_loaded(loaded, task, split, scoring, batch_size, limit, data_dir, accelerator=accelerator)
    if not accelerator.is_main_process:
        return
    if predictions is not None:
        write_predictions(predictions, rows, result)
    summary = {
        "model": loaded.model_name,
        "method": loaded.method,
        "task": task or (loaded.config.task if loaded.config else None),
        "split": split,
        "scoring": result.scoring,
        "examples": result.count,
        "metrics": result.metrics,
    }
    if as_json:
        print_json(summary)
        return
    console.print(
        f"{summary['task']} {split}: {result.count} examples, {result.scoring}, {loaded.method} on {loaded.model_name}",
        highlight=False,
        soft_wrap=True,
    )
    table = Table()
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in result.metrics.items():
        table.add_row(name, f"{value:.2f}")
    console.print(table)
