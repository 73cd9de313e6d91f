"""`adept env`: the versions, devices and sandbox adept runs with, and whether they are the tested ones."""

from __future__ import annotations

import platform
import sys
from typing import Annotated, Any

import typer
from rich.table import Table

from .common import console, examples, print_json, user_errors, warn

EXAMPLES = examples(
    ("Versions, devices and the code sandbox (paste this into a bug report)", "adept env"),
    ("Whether a model can share the prompt's computation, and why not", "adept env --model smollm2-135m"),
    ("As JSON", "adept env --json"),
)
SHARED = "shared: the prompt's keys and values are computed once for every row"
NO_SANDBOX = "none found: code tasks (MBPP) need bubblewrap, or unshare with namespaces (docs/tasks.md)"


def environment_report(model: str | None = None) -> dict[str, Any]:
    """Everything `adept env` prints."""
    import os

    import torch

    from ..environment import LOCK_FILE, PACKAGES, declared_ranges, installed_version, locked_versions, package_status
    from ..evaluation.sandbox import detect_sandbox

    ranges, locked = declared_ranges(), locked_versions()
    packages = {}
    for package in PACKAGES:
        installed = installed_version(package)
        status = "this package" if package == "adept-cli" else package_status(package, installed, ranges, locked)
        packages[package] = {"version": installed, "status": status}
    sandbox = detect_sandbox()
    report: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "executable": sys.executable,
        "packages": packages,
        "tested": not any(row["status"].startswith("outside") for row in packages.values()),
        "lock": str(LOCK_FILE) if locked is not None else None,
        "devices": {
            "cpu_cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "cuda": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
            "mps": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
        },
        "sandbox": sandbox.describe() if sandbox is not None else NO_SANDBOX,
    }
    if model is not None:
        from ..prompt.sharing import model_sharing_problem

        problem = model_sharing_problem(model)
        report["model"] = {"name": model, "shares_prompt": problem is None, "shared_prompt": problem or SHARED}
    return report


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
    found = environment_report(model)
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
