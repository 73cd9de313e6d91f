"""What every subcommand shares: consoles, one-line errors, JSON output."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import typer
from rich.console import Console

from ..errors import AdeptError

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one line to stderr and exit non-zero."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def user_errors(command: Callable) -> Callable:
    """Turn the library's user-fixable errors into a one-line message and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except AdeptError as error:
            fail(str(error))

    return wrapper


def examples(*pairs: tuple[str, str]) -> str:
    """A help epilog: each example a description line and the command under it."""
    return "Examples:\n\n" + "\n\n".join(f"{text}:\n\n[bold]  {command}[/]" for text, command in pairs)


def print_json(data: Any) -> None:
    """Machine-readable output on stdout, nothing else on that stream."""
    sys.stdout.write(json.dumps(data, indent=2) + "\n")
    sys.stdout.flush()
