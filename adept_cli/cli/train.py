"""`adept train`: train ADePT, DePT, PT, LoRA or full fine-tuning on a task."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..prompt.methods import training_method_names
from .common import console, examples, fail, print_json, user_errors, warn, writable_problem

EXAMPLES = examples(
    (
        "ADePT with the embedded SmolLM2-135M on SST-2 (CPU-sized recipe)",
        "adept train --recipe recipes/cpu/smollm2-sst2.yaml",
    ),
    (
        "The paper's T5-base setting for a small GLUE/SuperGLUE task",
        "adept train --model t5-base --task boolq --recipe recipes/t5-base-small-data.yaml",
    ),
    ("Override any setting with key=value", "adept train --task rte steps=2000 lr_prompt=0.3 bottleneck=19"),
    ("Continue an interrupted run", "adept train --output-dir runs/rte-adept --resume auto"),
    ("Several GPUs", "accelerate launch -m adept_cli train --recipe recipes/t5-base-small-data.yaml --task rte"),
    ("Every setting, with help", "adept train --list-settings"),
)


@user_errors
def train(
    overrides: Annotated[list[str] | None, typer.Argument(help="Settings as key=value (see --list-settings).")] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Hub id, local directory, .gguf file or embedded name.")
    ] = None,
    task: Annotated[
        str | None, typer.Option("--task", "-t", help="Task name or task YAML file; a,b,c trains on a mixture.")
    ] = None,
    method: Annotated[str | None, typer.Option("--method", help=f"{' | '.join(training_method_names())}.")] = None,
    recipe: Annotated[
        Path | None,
        typer.Option("--recipe", "-r", help="YAML recipe: a path, or a name of the catalogue (adept recipes)."),
    ] = None,
    output_dir: Annotated[str | None, typer.Option("--output-dir", "-o", help="Run directory.")] = None,
    data_dir: Annotated[
        str | None, typer.Option("--data-dir", help="Folder with <task>/<split> files; hub: read from the hub only.")
    ] = None,
    resume: Annotated[
        str | None, typer.Option("--resume", help="'auto' (newest checkpoint of the run) or a checkpoint path.")
    ] = None,
    list_settings: Annotated[bool, typer.Option("--list-settings", help="Print every setting and exit.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print results.json on stdout at the end.")] = False,
) -> None:
    """Train a method on a task; the run directory gets config.yaml, metrics.jsonl, checkpoints/, best/
    and results.json. Without --model the embedded SmolLM2-135M-Instruct is used."""
    from ..run_dir import RunDir
    from ..training.config import TrainConfig, build_config, config_warnings, field_help, parse_overrides

    if list_settings:
        defaults = TrainConfig().to_dict()
        for name, text in field_help().items():
            console.print(f"[bold]{name}[/] = {defaults.get(name)!r}  [dim]{text}[/]", highlight=False)
        return
    options = {"model": model, "task": task, "method": method, "output_dir": output_dir, "data_dir": data_dir}
    config = build_config(recipe, options, overrides)
    saved = RunDir(config.resolved_output_dir()).config
    if resume is not None and recipe is None and saved.is_file():
        # Continue with the run's own settings; anything given here must agree with them (checked later).
        config = build_config(saved, options, overrides)
        if task is None and "task" not in parse_overrides(overrides or []):
            _refuse_recorded_code(saved, config)
    elif resume is not None and recipe is None and not overrides and not (model or task or method):
        fail(
            f"--resume {resume}: {saved.parent} holds no run to resume (no {saved.name}); "
            "start one by giving its settings (--recipe, --task, key=value)"
        )
    _check_before_loading(config)
    for message in config_warnings(config):
        warn(message)
    from ..training.loop import train as run_training

    try:
        results = run_training(config, resume=resume, console=console if not as_json else None)
    except KeyboardInterrupt:
        fail("interrupted", code=130)
    if as_json:
        print_json(results)


def _refuse_recorded_code(saved, config) -> None:
    """A run folder from someone else must not run code of theirs on --resume: a task file its config names
    whose metrics are Python functions is used only when the user names it."""
    from ..tasks import task_code

    for name in config.tasks:
        code = task_code(name)
        if code:
            fail(
                f"{saved} names the task file {name}, whose metrics are Python code ({', '.join(code)}) that "
                f"training would import and run; if you trust it, name the task yourself: --task {name}"
            )


def _check_before_loading(config) -> None:
    """The output folder, the model name and the task, checked in a second, before torch loads."""
    from ..hf import resolve_model
    from ..tasks import get_task
    from ..training.config import positions_problem

    output = config.resolved_output_dir()
    problem = writable_problem(output)
    if problem:
        fail(f"--output-dir {output}: {problem}")
    resolve_model(config.model)
    for name in config.tasks:
        get_task(name)
    problem = positions_problem(config)
    if problem:
        fail(problem)
