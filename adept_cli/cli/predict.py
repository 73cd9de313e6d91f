"""`adept predict`: a trained adapter on new, unlabelled rows (a file or stdin), one JSON line per row."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from .common import err_console, examples, fail, require_at_least, user_errors, writable_problem

EXAMPLES = examples(
    (
        "A run's adapter on your own rows (the run's task formats them)",
        "adept predict --run runs/sst2-adept --input reviews.csv -o preds.jsonl",
    ),
    (
        "Plain text lines from stdin",
        "printf 'a gripping film\\nutterly boring\\n' | adept predict --run runs/sst2-adept --input -",
    ),
    (
        "A saved adapter, another task file, skipping bad rows",
        "adept predict --adapter my-adapter --task my-task.yaml --input rows.jsonl --on-error skip",
    ),
)


@user_errors
def predict_command(
    input: Annotated[
        str, typer.Option("--input", "-i", help="jsonl / json / csv / tsv / parquet file, or - for stdin.")
    ],
    run: Annotated[Path | None, typer.Option("--run", help="Run directory written by adept train.")] = None,
    adapter: Annotated[Path | None, typer.Option("--adapter", help="Adapter directory (adept or PEFT).")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Base model (default: the adapter's).")] = None,
    task: Annotated[str | None, typer.Option("--task", "-t", help="Task or task YAML (default: the run's).")] = None,
    output: Annotated[str, typer.Option("--output", "-o", help="File to write (atomically), or - for stdout.")] = "-",
    on_error: Annotated[str, typer.Option("--on-error", help="A row that cannot be formatted: fail | skip.")] = "fail",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Rows per batch.")] = 32,
) -> None:
    """Answer new rows with a trained adapter: each row is formatted with the task's template (a plain-text
    stdin line is the task's one input field) and answered in input order, one JSON line per row: for a
    classification task the label and a probability per label word (rank scoring), otherwise the
    generated text. A row that cannot be formatted fails the run (default) or, with --on-error skip, is
    reported with its line and written as {"index", "error"}."""
    from ..predicting import ON_ERROR

    require_at_least(1, batch_size=batch_size)
    if on_error not in ON_ERROR:
        fail(f"--on-error must be one of {', '.join(ON_ERROR)}; got {on_error!r}")
    if (run is None) == (adapter is None):
        fail("give exactly one of --run or --adapter")
    if input != "-" and not Path(input).is_file():
        fail(f"--input {input}: no such file")
    if output != "-":
        problem = writable_problem(Path(output))
        if problem:
            fail(f"--output {output}: {problem}")
    if task is not None:
        from ..tasks import get_task

        get_task(task)  # an unknown task or a bad task file answers before any model loads

    from ..predicting import Predictor, predict, read_rows
    from ..tasks import get_task
    from ..trained import encoder_for, eval_settings, load_from_adapter, load_from_run

    loaded = load_from_run(run) if run is not None else load_from_adapter(adapter, model)
    settings = eval_settings(loaded, task=task)
    chosen = get_task(settings.task, run_code=False)  # rows are formatted, never scored: no metric code
    encoder = encoder_for(loaded, settings, chosen)
    predictor = Predictor(loaded.model.eval(), encoder, chosen, batch_size)
    with _progress() as advance, _sink(output) as write:

        def write_and_report(record: dict) -> None:
            if "error" in record:
                err_console.print(f"skipped row {record['index']}: {record['error']}", highlight=False, soft_wrap=True)
            write(record)

        counts = predict(predictor, read_rows(input), write_and_report, on_error, progress=advance)
    skipped = f", {counts['skipped']} skipped" if counts["skipped"] else ""
    err_console.print(f"{counts['answered']} rows answered{skipped} ({chosen.name}, {loaded.method})", highlight=False)


@contextmanager
def _sink(output: str):
    """A writer of JSON lines: stdout, or a scratch file renamed over `output` only when all went well."""
    if output == "-":
        yield lambda record: (sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n"), sys.stdout.flush())
        return
    from ..files import atomic_text_file

    with atomic_text_file(output) as handle:
        yield lambda record: handle.write(json.dumps(record, ensure_ascii=False) + "\n")


@contextmanager
def _progress():
    """A rows-answered counter on a terminal's stderr; nothing otherwise."""
    if not err_console.is_terminal:
        yield None
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (SpinnerColumn(), TextColumn("{task.completed:,} rows"), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task("predict", total=None)
        yield lambda count: bar.advance(task, count)
