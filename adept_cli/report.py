"""`adept report`: one table across runs and sweeps, laid out as the paper's Tables 3-4: a row per method,
a column per task, each cell the mean ± std of the test main metric over the runs given (a sweep
contributes the runs of its chosen grid point), then the trainable parameters and the mean over tasks.
A row is a method with its k-shot size and its init_from source, if any, and its base model when the runs
given have more than one; runs of one row on one task are pooled (seeds of one setting)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from .errors import AdeptError
from .run_dir import RunDir
from .search import chosen_runs
from .sweep import SWEEP_FILE


class ReportError(AdeptError, ValueError):
    """A path given to `adept report` is neither a finished run nor a sweep."""


def entries(paths: list[str | Path]) -> list[dict[str, Any]]:
    """One entry per finished run: task, method label, main metric, test value, trainable parameters."""
    out = []
    for path in map(Path, paths):
        if (path / SWEEP_FILE).is_file():
            _, seeds = chosen_runs(path)
            if not seeds:
                raise ReportError(f"{path}: no run of the sweep has finished yet")
            out += [_entry(RunDir(Path(seed["run"])).read_results(), path) for seed in seeds]
            continue
        run = RunDir(path)
        results = run.read_results()
        if results is None:
            why = "an unfinished run has no results.json yet" if run.holds_a_run() else "not a run"
            raise ReportError(f"{path}: {why} (give finished run directories or sweep folders)")
        out.append(_entry(results, path))
    return out


def _entry(results: dict[str, Any], source: Path) -> dict[str, Any]:
    metric = results["main_metric"]
    label = results["method"]
    if results.get("k_shot"):
        label += f", k={results['k_shot']}"
    if results.get("init_from"):
        label += f", from {Path(results['init_from']).name}"
    return {
        "task": results["task"],
        "method": label,
        "metric": metric,
        "test": results["test"][metric],
        "params": results.get("trainable_params"),
        "model": results.get("model"),
        "source": str(source),
    }


def build(entries: list[dict[str, Any]]) -> dict[str, Any]:
    if len({entry["model"] for entry in entries}) > 1:  # never pool runs of different base models
        entries = [{**entry, "method": f"{entry['method']} on {entry['model']}"} for entry in entries]
    tasks = list(dict.fromkeys(entry["task"] for entry in entries))
    methods = list(dict.fromkeys(entry["method"] for entry in entries))
    cells: dict[str, dict[str, dict[str, Any]]] = {method: {} for method in methods}
    for method in methods:
        for task in tasks:
            values = [e["test"] for e in entries if e["method"] == method and e["task"] == task]
            if values:
                metric = next(e["metric"] for e in entries if e["task"] == task)
                std = statistics.stdev(values) if len(values) > 1 else 0.0
                cells[method][task] = {"mean": statistics.fmean(values), "std": std, "n": len(values), "metric": metric}
    params = {
        method: statistics.fmean(p) if (p := [e["params"] for e in entries if e["method"] == method and e["params"]])
        else None
        for method in methods
    }  # fmt: skip
    means = {
        method: statistics.fmean(cell["mean"] for cell in cells[method].values()) if cells[method] else None
        for method in methods
    }
    return {"tasks": tasks, "methods": methods, "cells": cells, "params": params, "mean": means, "entries": entries}


def markdown(report: dict[str, Any]) -> str:
    tasks = report["tasks"]
    header = ["method", "params", *tasks, "mean"]
    lines = ["| " + " | ".join(header) + " |", "| --- | ---: |" + " ---: |" * (len(tasks) + 1)]
    for method in report["methods"]:
        row = [method, f"{report['params'][method]:,.0f}" if report["params"][method] else "-"]
        for task in tasks:
            cell = report["cells"][method].get(task)
            row.append(f"{cell['mean']:.1f} ± {cell['std']:.1f} (n={cell['n']})" if cell else "-")
        mean = report["mean"][method]
        row.append(f"{mean:.1f}" if mean is not None else "-")
        lines.append("| " + " | ".join(row) + " |")
    metrics = {task: next(iter(c[task]["metric"] for c in report["cells"].values() if task in c)) for task in tasks}
    lines += [
        "",
        "Test " + ", ".join(f"{task}: {metric}" for task, metric in metrics.items()) + "; mean ± std over runs.",
    ]
    return "\n".join(lines) + "\n"
