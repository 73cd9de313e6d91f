"""What every subcommand shares: consoles, one-line errors, JSON output."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import AdeptError

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one line to stderr and exit non-zero."""
    # the message is text, never markup: a value quoted from the user ("[x]", "adept-cli[serve]") prints as is
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def warn(message: str) -> None:
    """A warning on stderr (so it never mixes with --json output on stdout)."""
    err_console.print(f"[bold yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


def user_errors(command: Callable) -> Callable:
    """Turn the library's user-fixable errors into a one-line message and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except AdeptError as error:
            fail(str(error))
        except OSError as error:  # a file the user named cannot be read or written: say which and why
            if error.filename is None:
                raise
            fail(f"{error.filename}: {error.strerror or error}")

    return wrapper


def require_at_least(minimum: int, **options: int | None) -> None:
    """One line, before any work, for an option below its minimum (`limit=0` -> "--limit must be >= 1")."""
    for name, value in options.items():
        if value is not None and value < minimum:
            fail(f"--{name.replace('_', '-')} must be >= {minimum}; got {value}")


def require_at_most(maximum: int, what: str, **options: int | None) -> None:
    """One line, before any work, for an option beyond what any model has (`what` says what it is)."""
    for name, value in options.items():
        if value is not None and value > maximum:
            fail(f"--{name.replace('_', '-')} is {what}: at most {maximum:,}; got {value:,}")


def examples(*pairs: tuple[str, str]) -> str:
    """A help epilog: each example a description line and the command under it."""
    return "Examples:\n\n" + "\n\n".join(f"{text}:\n\n[bold]  {command}[/]" for text, command in pairs)


def print_json(data: Any) -> None:
    """Machine-readable output on stdout, nothing else on that stream."""
    sys.stdout.write(json.dumps(data, indent=2) + "\n")
    sys.stdout.flush()


class AnySplit(str, Enum):
    train = "train"
    validation = "validation"
    test = "test"


class Split(str, Enum):
    validation = "validation"
    test = "test"


class Scoring(str, Enum):
    generate = "generate"
    rank = "rank"


def check_writable_file(path: Path, option: str) -> None:
    """Fail at once, before any model loads, if `path` cannot be written."""
    problem = writable_problem(path)
    if problem:
        fail(f"{option} {path}: {problem}")


def writable_problem(path: Path) -> str | None:
    """Why a file or folder cannot be created at `path` (None if it can)."""
    for parent in [path, *path.parents]:
        if parent.exists():
            if parent != path and not parent.is_dir():
                return f"{parent} is a file, not a folder"
            folder = parent if parent.is_dir() else parent.parent
            if not os.access(folder, os.W_OK | os.X_OK) or str(folder.resolve()).startswith(("/proc", "/sys")):
                return f"{folder} is not writable"
            return None
    return "no existing parent folder"


def print_metrics(metrics: dict[str, float]) -> None:
    from rich.table import Table

    from ..evaluation.metrics import format_metric

    table = Table()
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        table.add_row(*format_metric(name, value))
    console.print(table)


def check_run_or_adapter(run: Path | None, adapter: Path | None, model: str | None) -> None:
    """`--run RUN` or `--adapter DIR`, one of them (`--model` only beside `--adapter`), checked before
    anything loads."""
    from ..run_dir import RunDir

    if (run is None) == (adapter is None):
        fail("give --run RUN or --adapter DIR (one of them)")
    if model is not None and adapter is None:
        fail("--model goes with --adapter (a run records its base)")
    if run is not None and not RunDir(run).holds_a_run():
        fail(f"--run {run} is not a run directory (no config.yaml)")
    if adapter is not None and not adapter.is_dir():
        fail(f"--adapter {adapter}: not a directory")


def load_run_or_adapter(
    run: Path | None, adapter: Path | None, model: str | None, refusal: Callable[[Path, str], str]
) -> tuple[Any, Any, Path]:
    """The prompt-tuned model of a run's best adapter or of an adapter directory (adept's own, or a PEFT
    prompt read as PT), its tokenizer, and the folder the adapter was read from. A run of a method
    without a soft prompt fails with `refusal(run, method)`."""
    from ..hf import load_tokenizer
    from ..prompt.io import load_adapter
    from ..prompt.model import PromptTunedModel
    from ..run_dir import RunDir
    from ..trained import load_from_run

    if adapter is not None:
        trained = load_adapter(adapter, base_model_name=model)
        return trained, load_tokenizer(trained.base_model_name), adapter
    loaded = load_from_run(run)
    if not isinstance(loaded.model, PromptTunedModel):
        fail(refusal(run, loaded.method))
    return loaded.model, loaded.tokenizer, RunDir(run).best
