"""`adept plot`: training curves of one or several runs (loss, learning rates, validation metric)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import check_writable_file, console, examples, fail, user_errors

EXAMPLES = examples(
    ("One run (writes runs/rte-adept/curves.png and curves.json)", "adept plot runs/rte-adept"),
    ("Several runs overlaid", "adept plot runs/rte-adept runs/rte-dept runs/rte-pt -o rte.png"),
)


@user_errors
def plot_command(
    runs: Annotated[list[Path], typer.Argument(help="Run directories (finished or not).")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="PNG to write (default: <run>/curves.png for one run).")
    ] = None,
) -> None:
    """Loss, learning rates and the validation metric against the step, every run overlaid; the numbers
    plotted go to a JSON file beside the PNG."""
    if output is None:
        if len(runs) > 1:
            fail("several runs: name the picture with -o FILE.png")
        output = runs[0] / "curves.png"
    if output.suffix.lower() != ".png":
        fail(f"-o {output}: expected a .png file")
    check_writable_file(output, "-o")
    from ..plots import plot_runs, run_curves

    data = plot_runs([run_curves(run) for run in runs], output)
    console.print(f"wrote {output} and {data}", highlight=False, soft_wrap=True)
