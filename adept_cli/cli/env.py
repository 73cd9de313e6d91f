"""`adept env`: the versions, devices and sandbox adept runs with, and whether they are the tested ones."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from .common import console, examples, print_json, user_errors, warn

EXAMPLES = examples(
    ("Versions, devices and the code sandbox (paste this into a bug report)", "adept env"),
    ("Whether a model can share the prompt's computation, and why not", "adept env --model smollm2-135m"),
    ("As JSON", "adept env --json"),
)


@user_errors
def env_command(
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Also say whether this model shares the prompt (config only, no weights)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print everything as JSON.")] = False,
) -> None:
    """Python, torch, transformers, PEFT, Accelerate, datasets, bitsandbytes (and vLLM) versions; devices;
    the sandbox for generated code; whether each version is the locked one or inside the tested range
    (docs/compatibility.md)."""
    from ..environment import report

    found = report(model)
    if as_json:
        print_json(found)
        return
    console.print(f"Python {found['python']} on {found['platform']} ({found['executable']})", highlight=False)
    table = Table()
    table.add_column("package")
    table.add_column("version")
    table.add_column("tested")
    for package, row in found["packages"].items():
        table.add_row(package, row["version"] or "-", row["status"])
    console.print(table)
    devices = found["devices"]
    gpus = ", ".join(devices["cuda"]) or "none"
    console.print(
        f"devices: CUDA {gpus}; MPS {'yes' if devices['mps'] else 'no'}; "
        f"{devices['cpu_cores']} CPU cores ({devices['torch_threads']} torch threads)",
        highlight=False,
    )
    console.print(f"sandbox for generated code: {found['sandbox']}", highlight=False, soft_wrap=True)
    console.print(f"lock: {found['lock'] or 'none (not a source checkout): ranges from the package metadata'}")
    if "model" in found:
        console.print(f"{found['model']['name']}: {found['model']['shared_prompt']}", highlight=False, soft_wrap=True)
    if not found["tested"]:
        warn("some versions are outside the tested ranges: results may differ from the documented ones")
