"""What adept runs on: Python and the packages whose versions decide its behaviour, and whether each is a
version the project tested.

The tested set is written down twice, by one process (bench/compat.sh): the ranges in pyproject.toml
(lower and upper bounds that a full test run passed on; read here from the installed package's metadata)
and the lock of the exact versions CI installs (`requirements.lock`, read here when adept runs from a
source checkout). Runs and adapters record `recorded_versions()`, so that a later evaluation can say
what changed since they were made.
"""

from __future__ import annotations

import platform
import sys
from importlib.metadata import PackageNotFoundError, requires, version
from pathlib import Path
from typing import Any

# The packages whose versions change adept's results or abilities, in the order they are reported.
PACKAGES = (
    "adept-cli",
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "datasets",
    "tokenizers",
    "safetensors",
    "huggingface-hub",
    "bitsandbytes",
    "gguf",
    "vllm",
)
LOCK_FILE = Path(__file__).resolve().parents[1] / "requirements.lock"


def installed_version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def recorded_versions() -> dict[str, str]:
    """Python's version and every installed package of PACKAGES: what a run or an adapter records."""
    found = {"python": platform.python_version()}
    for package in PACKAGES:
        installed = installed_version(package)
        if installed is not None:
            found[package] = installed
    return found


def version_changes(recorded: dict[str, Any] | None, current: dict[str, str] | None = None) -> list[str]:
    """'transformers 5.23.0 -> 5.24.0' for every package whose version differs from `recorded`."""
    if not isinstance(recorded, dict):
        return []
    current = recorded_versions() if current is None else current
    changes = []
    for package in dict.fromkeys([*recorded, *current]):
        before, now = recorded.get(package), current.get(package)
        if before != now:
            changes.append(f"{package} {before or 'absent'} -> {now or 'absent'}")
    return changes


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def declared_ranges() -> dict[str, Any]:
    """The version range adept-cli declares for each dependency (extras included), from its metadata."""
    from packaging.requirements import Requirement

    ranges: dict[str, Any] = {}
    try:
        lines = requires("adept-cli") or []
    except PackageNotFoundError:
        return ranges
    for line in lines:
        requirement = Requirement(line)
        name = _canonical(requirement.name)
        if name != "adept-cli" and str(requirement.specifier):
            ranges[name] = requirement.specifier
    return ranges


def locked_versions(path: Path = LOCK_FILE) -> dict[str, str] | None:
    """name -> version of the lock file (None where adept was not installed from a source checkout)."""
    if not path.is_file():
        return None
    locked = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        requirement = line.split("#", 1)[0].split(";", 1)[0].strip()
        name, separator, pinned = requirement.partition("==")
        if separator:
            locked[_canonical(name.strip())] = pinned.strip()
    return locked


def _without_local(text: str) -> str:
    return text.split("+", 1)[0]  # 2.13.0+cpu is the 2.13.0 release, built for the CPU


def package_status(package: str, installed: str | None, ranges: dict[str, Any], locked: dict | None) -> str:
    """'locked' | 'in the tested range' | 'outside the tested range (...)' | 'not installed' | 'not declared'."""
    if installed is None:
        return "not installed"
    name = _canonical(package)
    if locked is not None and name in locked and _without_local(installed) == locked[name]:
        return "locked"
    if name not in ranges:
        return "not declared"
    if ranges[name].contains(_without_local(installed), prereleases=True):
        return "in the tested range"
    return f"outside the tested range ({ranges[name]})"


def devices() -> dict[str, Any]:
    import os

    import torch

    found: dict[str, Any] = {"cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    found["cuda"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    found["mps"] = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    return found


def sandbox_line() -> str:
    from .evaluation.sandbox import detect_sandbox

    sandbox = detect_sandbox()
    if sandbox is None:
        return "none found: code tasks (MBPP) need bubblewrap, or unshare with namespaces (docs/tasks.md)"
    return sandbox.describe()


def shared_prompt_line(model: str) -> tuple[bool, str]:
    """Whether `model` can share the prompt's computation, and why not; from its config alone (the model is
    built on the meta device: no weights are read or downloaded)."""
    import torch

    from .hf import auto_model_class, load_config
    from .prompt.sharing import sharing_problem

    config = load_config(model)
    with torch.device("meta"):
        base = auto_model_class(config).from_config(config)
    problem = sharing_problem(base)
    return problem is None, problem or "shared: the prompt's keys and values are computed once for every row"


def report(model: str | None = None) -> dict[str, Any]:
    """Everything `adept env` prints."""
    ranges, locked = declared_ranges(), locked_versions()
    packages = {}
    for package in PACKAGES:
        installed = installed_version(package)
        packages[package] = {
            "version": installed,
            "status": "this package" if package == "adept-cli" else package_status(package, installed, ranges, locked),
        }
    outside = [name for name, row in packages.items() if row["status"].startswith("outside")]
    result: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "executable": sys.executable,
        "packages": packages,
        "tested": not outside,
        "lock": str(LOCK_FILE) if locked is not None else None,
        "devices": devices(),
        "sandbox": sandbox_line(),
    }
    if model is not None:
        shared, why = shared_prompt_line(model)
        result["model"] = {"name": model, "shares_prompt": shared, "shared_prompt": why}
    return result
