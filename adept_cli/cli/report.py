"""`adept report`: one table across runs and sweeps (task x method, mean ± std, parameters)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import check_writable_file, console, examples, print_json, user_errors

EXAMPLES = examples(
    ("Sweeps of several methods and tasks in one table", "adept report sweeps/rte-adept sweeps/rte-pt sweeps/mrpc-*"),
    ("Separate seed runs, written to a file", "adept report runs/rte-adept-s1 runs/rte-adept-s2 -o table.md"),
)


@user_errors
def report_command(
    paths: Annotated[list[Path], typer.Argument(help="Finished run directories and sweep folders.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Also write the table (markdown) here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the table as JSON on stdout.")] = False,
) -> None:
    """A row per method, a column per task: the mean ± std of the test main metric over the runs given (a
    sweep adds the runs of its chosen grid point; runs of one method on one task are pooled), the
    trainable parameters and the mean over tasks, as in the paper's Tables 3-4."""
    from ..files import write_text_atomic
    from ..report import build, entries, markdown

    if output is not None:
        check_writable_file(output, "--output")
    report = build(entries(paths))
    text = markdown(report)
    if output is not None:
        write_text_atomic(output, text)
    if as_json:
        print_json(report)
        return
    console.print(text, highlight=False, soft_wrap=True)
