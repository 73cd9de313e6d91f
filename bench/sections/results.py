"""The committed results the report reads, and the lines every section shares."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parents[1]
RESULTS = BENCH / "results"


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def verdict(ok: bool, detail: str) -> str:
    return f"**met** ({detail})" if ok else f"**missed** ({detail})"


def provenance(data: dict[str, Any], command: bool = True) -> list[str]:
    machine = data["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items())
    device = (
        machine["gpu"] or f"{machine['cpu']}, {machine['cpu_cores']} cores, {machine['torch_threads']} torch threads"
    )
    run = f"- Command: `{data['command']}` at commit `{data['commit']}`" if command else f"- Commit `{data['commit']}`"
    return [
        run,
        f"- Machine: {device}; {machine['platform']}, Python {machine['python']}",
        f"- Versions: {versions}",
    ]
