"""`adept eval`: metrics of a run, a saved adapter, or the base model alone on a task split."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Annotated

import typer

from ..hf import QUANTIZATIONS
from .common import (
    Scoring,
    Split,
    check_writable_file,
    console,
    err_console,
    examples,
    fail,
    print_json,
    print_metrics,
    require_at_least,
    user_errors,
)

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
    task: Annotated[
        str | None, typer.Option("--task", "-t", help="Task (default: the run's or the adapter's).")
    ] = None,
    split: Annotated[Split, typer.Option("--split", help="Which split to score.")] = Split.test,
    scoring: Annotated[
        Scoring | None, typer.Option("--scoring", help="Default: the run's or the adapter's, else generate.")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Examples per batch, per process.")] = 32,
    limit: Annotated[int | None, typer.Option("--limit", help="Only the first N examples.")] = None,
    max_length: Annotated[
        int | None, typer.Option("--max-length", help="Maximum input tokens (default: as trained).")
    ] = None,
    max_target_length: Annotated[
        int | None, typer.Option("--max-target-length", help="Maximum target tokens (default: as trained).")
    ] = None,
    data_dir: Annotated[
        str | None, typer.Option("--data-dir", help="Folder with <task>/<split> files; hub: read from the hub only.")
    ] = None,
    chat_template: Annotated[
        str | None,
        typer.Option("--chat-template", help="auto | none | a Jinja file (default: as trained; none for a base)."),
    ] = None,
    quantization: Annotated[
        str | None,
        typer.Option("--quantization", help="none | 4bit | 8bit: the base through bitsandbytes (default: as trained)."),
    ] = None,
    predictions: Annotated[
        Path | None, typer.Option("--predictions", help="Write one JSON line per example here.")
    ] = None,
    allow_unsafe_exec: Annotated[
        bool,
        typer.Option(
            "--allow-unsafe-exec", help="Code tasks: run generated code unisolated where no sandbox works (unsafe)."
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
) -> None:
    """Evaluate on a task split: generation + string match (as the paper) or rank classification.

    A run or an adapter saved by `adept train` is scored with the settings it was trained with (task,
    lengths, scoring); options given here override them."""
    from ..tasks import get_task

    require_at_least(1, batch_size=batch_size, limit=limit, max_length=max_length, max_target_length=max_target_length)
    if run is not None and adapter is not None:
        fail("give --run or --adapter, not both")
    if run is None and adapter is None and task is None:
        fail("--task is required without --run or --adapter")
    if predictions is not None:
        check_writable_file(predictions, "--predictions")
    if quantization not in (None, *QUANTIZATIONS):
        fail(f"--quantization must be one of {', '.join(QUANTIZATIONS)}; got {quantization!r}")
    if task is not None:
        get_task(task)  # an unknown task or a bad task file answers before any model loads
    from ..tasks.sources import HUB

    if data_dir is not None and data_dir != HUB and not Path(data_dir).is_dir():
        fail(f"--data-dir {data_dir} is not a directory")
    from ..evaluation import write_predictions
    from ..evaluation.execution import sandbox_for
    from ..hf import make_accelerator
    from ..trained import (
        eval_settings,
        evaluate_loaded,
        load_base,
        load_from_adapter,
        load_from_run,
        loaded_notes,
        template_warning,
    )

    accelerator = make_accelerator()
    if run is not None:
        loaded = load_from_run(run, accelerator.device, quantization)
    elif adapter is not None:
        loaded = load_from_adapter(adapter, model, quantization, accelerator.device)
    else:
        loaded = load_base(model, quantization, accelerator.device)
    settings = eval_settings(
        loaded,
        task=task,
        scoring=scoring.value if scoring else None,
        max_length=max_length,
        max_target_length=max_target_length,
        data_dir=data_dir,
        limit=limit,
        allow_unsafe_exec=allow_unsafe_exec,
        chat_template=chat_template,
    )
    if get_task(settings.task, run_code=False).kind == "code" and accelerator.is_main_process:
        err_console.print(
            f"generated code runs in: {sandbox_for(settings.allow_unsafe_exec).describe()}", highlight=False
        )
    warning = template_warning(loaded, settings)
    if warning and accelerator.is_main_process:
        err_console.print(warning, highlight=False, soft_wrap=True)
    for note in loaded_notes(loaded) if accelerator.is_main_process else []:
        err_console.print(note, highlight=False, soft_wrap=True)
    # a spinner on stderr while the split is scored, so a long evaluation is never silent (--json reads stdout)
    waiting = f"evaluating {loaded.method} on {settings.task} {split.value} ..."
    with err_console.status(waiting) if accelerator.is_main_process else nullcontext():
        result, rows = evaluate_loaded(loaded, settings, split.value, batch_size, accelerator=accelerator)
    if not accelerator.is_main_process:
        return
    if predictions is not None:
        write_predictions(predictions, rows, result)
    summary = {
        "model": loaded.model_name,
        "method": loaded.method,
        "task": settings.task,
        "split": split.value,
        "scoring": result.scoring,
        "examples": result.count,
        "metrics": result.metrics,
    }
    if as_json:
        print_json(summary)
        return
    console.print(
        f"{summary['task']} {split.value}: {result.count} examples, {result.scoring}, "
        f"{loaded.method} on {loaded.model_name}",
        highlight=False,
        soft_wrap=True,
    )
    print_metrics(result.metrics)
