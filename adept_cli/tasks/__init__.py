"""Tasks: the paper's 23 NLP tasks and MBPP, plus user-defined tasks from YAML."""

from __future__ import annotations

from pathlib import Path

from .example import Example
from .loading import DEFAULT_SPLIT_SEED, SPLITS, TaskData, load_task_data
from .registry import TASKS, get_builtin_task
from .spec import Task, TaskError


def get_task(name: str, run_code: bool = True) -> Task:
    """A built-in task by name (`rte`, `sst2`, ...), or a task YAML file by path. `run_code=False` reads a
    task file without importing the metric functions it names (serving formats rows, never scores them)."""
    if is_task_file(name):
        from .custom import load_task_file

        return load_task_file(name, run_code=run_code)
    return get_builtin_task(name)


def task_code(name: str) -> tuple[str, ...]:
    """The metric functions (`module.function`) a task file names: Python code that scoring imports and
    runs. Read without importing anything; () for a built-in task."""
    if not is_task_file(name):
        return ()
    return tuple(metric for metric in get_task(name, run_code=False).metrics if "." in metric)


def is_task_file(name: str) -> bool:
    """Whether `name` names a task file (get_task's rule) rather than a built-in task."""
    return name.endswith((".yaml", ".yml")) or Path(name).is_file()


__all__ = [
    "DEFAULT_SPLIT_SEED",
    "SPLITS",
    "TASKS",
    "Example",
    "Task",
    "TaskData",
    "TaskError",
    "get_task",
    "is_task_file",
    "task_code",
    "load_task_data",
]
