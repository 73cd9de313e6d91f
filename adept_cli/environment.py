"""What adept runs on: Python and the packages whose versions decide its behaviour, and whether each is a
version the project tested.

The tested set lives in two places: the ranges in pyproject.toml (bounds that a full test run passed on,
recorded by bench/compat.sh in docs/compatibility.md; read here from the installed package's metadata) and
requirements.lock (the exact versions CI installs, written by .ci/lock; read here when adept runs from a
source checkout). Runs and adapters record `recorded_versions()`, so that a later evaluation can say what
changed since they were made.
"""

from __future__ import annotations

import platform
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
