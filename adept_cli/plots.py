"""Figures as PNG (matplotlib, Agg backend), each with the numbers it draws in a JSON file beside it:
training curves of runs (`adept plot`), the metric against the position shift (`adept shift-probe
--plot`, the paper's Table 1) and offset norms against embedding norms (`adept offsets --plot`, Table 2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import AdeptError
from .files import read_json_object, write_json_atomic
from .run_dir import RunDir, read_metrics

NOT_METRICS = ("kind", "step", "examples", "task", "invalid")


class PlotError(AdeptError, ValueError):
    """A run has nothing to plot; the message names it."""


def run_curves(run_dir: str | Path) -> dict[str, Any]:
    """The curves of a run: loss and learning rates per logged step, the validation metric per evaluation
    (a multi-task run's: the mean of its tasks)."""
    run = RunDir(Path(run_dir))
    if not run.holds_a_run():
        raise PlotError(f"{run.path} is not a run directory (no {run.config.name})")
    records, _ = read_metrics(run.metrics)
    train = [r for r in records if r.get("kind") == "train"]
    validation = [r for r in records if r.get("kind") == "validation" and r.get("task") in (None, "mean")]
    if not train and not validation:
        raise PlotError(f"{run.metrics}: nothing logged yet")
    metric = None
    if run.results.is_file():
        metric = read_json_object(run.results, PlotError, "a run's results").get("main_metric")
    if metric is None and validation:
        metric = next(key for key in validation[0] if key not in NOT_METRICS)
    rates = sorted({key for r in train for key in r if key.startswith("lr_")})
    return {
        "run": str(run.path),
        "label": run.path.name,
        "loss": {"step": [r["step"] for r in train], "value": [r["loss"] for r in train]},
        "learning_rates": {
            key: {"step": [r["step"] for r in train if key in r], "value": [r[key] for r in train if key in r]}
            for key in rates
        },
        "validation": {
            "metric": metric,
            "step": [r["step"] for r in validation if metric in r],
            "value": [r[metric] for r in validation if metric in r],
        },
    }


def plot_runs(curves: list[dict[str, Any]], path: Path) -> Path:
    """Three panels (loss, learning rates, validation metric), every run overlaid; writes PATH and
    PATH with .json (the numbers plotted). Returns the JSON path."""
    plt = _pyplot()
    figure, (loss, rates, metric) = plt.subplots(1, 3, figsize=(14, 4))
    for index, curve in enumerate(curves):
        color = f"C{index % 10}"
        loss.plot(curve["loss"]["step"], curve["loss"]["value"], color=color, label=curve["label"])
        for style, (name, values) in zip(("-", "--", ":", "-."), curve["learning_rates"].items()):
            rates.plot(values["step"], values["value"], color=color, linestyle=style, label=f"{curve['label']} {name}")
        validation = curve["validation"]
        metric.plot(validation["step"], validation["value"], color=color, marker="o", label=curve["label"])
    metrics = sorted({curve["validation"]["metric"] for curve in curves if curve["validation"]["metric"]})
    for axes, title, ylabel in (
        (loss, "training loss (per target token)", "loss"),
        (rates, "learning rates", "learning rate"),
        (metric, "validation", " / ".join(metrics) or "metric"),
    ):
        axes.set_title(title, fontsize=10)
        axes.set_xlabel("step")
        axes.set_ylabel(ylabel)
        axes.grid(alpha=0.3)
        if axes.lines:
            axes.legend(fontsize=7)
    return save_figure(plt, figure, path, {"runs": curves})


def save_figure(plt: Any, figure: Any, path: Path, data: dict[str, Any]) -> Path:
    """The PNG at `path` and the numbers it draws at `path` with .json (returned)."""
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    written = path.with_suffix(".json")
    write_json_atomic(written, data)
    return written


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_shift_probe(results: list[dict[str, Any]], path: Path) -> Path:
    """The paper's Table 1 as a figure: the metric against the shift, one line per run (method)."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6, 4))
    for result in results:
        shifts = [row["shift"] for row in result["rows"]]
        values = [row["metric"] for row in result["rows"]]
        axes.plot(shifts, values, marker="o", label=f"{result['method']} ({result['label']})")
    metrics = sorted({result["metric"] for result in results})
    axes.set_xlabel("shift (positions)")
    axes.set_ylabel(" / ".join(metrics))
    tasks = sorted({result["task"] for result in results})
    axes.set_title(f"robustness to position shifts: {', '.join(tasks)}", fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return save_figure(plt, figure, path, {"runs": results})


def histogram(values: list[float], edges: list[float]) -> dict[str, list[float]]:
    import numpy as np

    counts, _ = np.histogram(values, bins=edges)
    return {"edges": edges, "counts": counts.tolist()}


def plot_offset_norms(stats: Any, label: str, path: Path) -> Path:
    """The paper's Table 2 as a figure: how large each token's offset is next to its input embedding
    (L2 norms over every token of the split, log-spaced bins)."""
    import numpy as np

    plt = _pyplot()
    series = {"input embeddings": stats.embedding_norms or []}
    if stats.offset_norms:
        series["offsets"] = stats.offset_norms
    positive = [value for values in series.values() for value in values if value > 0]
    if not positive:
        raise PlotError(f"{label}: no token norms to draw")
    edges = np.geomspace(min(positive), max(positive) * 1.0001, 41).tolist()
    figure, axes = plt.subplots(figsize=(6, 4))
    data = {"method": stats.method, "label": label, "tokens": stats.tokens}
    for name, values in series.items():
        data[name] = histogram(values, edges) | {"mean": float(np.mean(values))}
        axes.hist(values, bins=edges, alpha=0.6, label=f"{name} (mean {np.mean(values):.3g})")
    axes.set_xscale("log")
    axes.set_xlabel("L2 norm per token")
    axes.set_ylabel("tokens")
    axes.set_title(f"{stats.method} ({label}): offsets against input embeddings", fontsize=10)
    axes.legend(fontsize=8)
    return save_figure(plt, figure, path, data)
