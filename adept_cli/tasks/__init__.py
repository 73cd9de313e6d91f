"""Tasks: the paper's 23 NLP tasks and MBPP, plus user-defined tasks from YAML."""

from __future__ import annotations

from pathlib import Path

from .example import Example
from .loading import DEFAULT_SPLIT_SEED, SPLITS, TaskData, load_task_data
from .registry import TASKS, get_builtin_task
from .spec import Task, TaskError


def get_task(name: str) -> Task:
    """A built-in task by name (`rte`, `sst2`, ...), or a task YAML file by path."""
    if name.endswith((".yaml", ".yml")) or Path(name).is_file():
        from .custom import load_task_file

        return load_task_file(name)
    return get_builtin_task(name)


__all__ = [
    "DEFAULT_SPLIT_SEED",
    "SPLITS",
    "TASKS",
    "Example",
    "Task",
    "TaskData",
    "TaskError",
    "get_task",
    "load_task_data",
]
