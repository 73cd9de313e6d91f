"""`adept tasks`: the task registry, with sources, metrics and split sizes where the data is local."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from .common import console, examples, print_json, user_errors

EXAMPLES = examples(
    ("Every built-in task", "adept tasks"),
    ("One task: template, label words, split sizes", "adept tasks rte"),
    ("Your own data for a built-in task", "adept tasks sst2 --data-dir ./my-data"),
    ("A task defined in YAML", "adept tasks ./my-task.yaml --json"),
)

RULES = {
    "halve": "validation halved into validation / test",
    "holdout": "{holdout:,} training rows as validation; test = {test_source}",
    "fixed": "{sources}",
    "halve_all": "all splits pooled, 50/50 train / test, {holdout} training rows as validation",
}


def _rule_text(task: Any) -> str:
    rule = task.split_rule
    sources = ", ".join(f"{ours} = {theirs}" for ours, theirs in rule.sources)
    text = RULES[rule.kind].format(holdout=rule.holdout, test_source=rule.test_source, sources=sources)
    return text + (f"; training capped at {rule.train_cap:,}" if rule.train_cap else "")


def _summary(task: Any, data_dir: Path | None) -> dict[str, Any]:
    from ..tasks import TaskError
    from ..tasks.loading import describe_local
    from ..tasks.sources import local_task_dir

    try:
        folder = local_task_dir(task, data_dir) if not task.data_files else None
    except TaskError:  # an explicit --data-dir without this task: no local data for it
        folder = None
    return {
        "name": task.name,
        "description": task.description,
        "kind": task.kind,
        "metrics": list(task.metrics),
        "source": task.hub.describe() if task.hub else task.origin,
        "split_rule": _rule_text(task),
        "max_length": task.max_length,
        "local_dir": str(folder) if folder else None,
        "local_rows": describe_local(task, folder),
    }


@user_errors
def tasks(
    name: Annotated[str | None, typer.Argument(help="A task name or task YAML file to describe in full.")] = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Folder with <task>/<split>.jsonl|json|csv|tsv|parquet.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the tasks: source on the Hugging Face hub, metrics (the first selects checkpoints), split rule
    and the rows of local data files found (../shared/data, $ADEPT_DATA_DIR or --data-dir)."""
    from ..tasks import TASKS, get_task

    if name is None:
        rows = [_summary(task, data_dir) for task in TASKS.values()]
        if as_json:
            print_json(rows)
            return
        table = Table(title="Tasks (metrics in percent; the first selects checkpoints)", title_justify="left")
        for column in ("task", "kind", "metrics", "hub source", "local rows"):
            table.add_column(column)
        for row in rows:
            local = ", ".join(f"{split} {count:,}" for split, count in row["local_rows"].items()) or "-"
            table.add_row(row["name"], row["kind"], ", ".join(row["metrics"]), row["source"], local)
        console.print(table)
        return
    task = get_task(name)
    detail = _summary(task, data_dir)
    detail.update(template=task.template, label_words=list(task.label_words), split_sizes=_split_sizes(task, data_dir))
    if as_json:
        print_json(detail)
        return
    console.print(f"[bold]{task.name}[/]: {task.description}", highlight=False)
    for key in ("kind", "metrics", "source", "split_rule", "max_length", "local_dir", "label_words", "split_sizes"):
        console.print(f"  {key}: {detail[key]}", highlight=False, soft_wrap=True)
    console.print("  template:", highlight=False)
    console.print("    " + task.template.replace("\n", "\n    "), highlight=False, markup=False)


def _split_sizes(task: Any, data_dir: Path | None) -> dict[str, Any]:
    """Rows per split after the split rule, or why a split is not available."""
    from ..tasks import TaskError, load_task_data

    sizes: dict[str, Any] = {}
    for split in ("train", "validation", "test"):
        try:
            sizes[split] = len(load_task_data(task, [split], data_dir=data_dir)[split])
        except TaskError as error:
            sizes[split] = f"unavailable: {error}"
    return sizes
