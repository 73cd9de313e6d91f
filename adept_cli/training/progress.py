"""What a run tells the user: metrics.jsonl always; a rich progress bar on a terminal, plain log lines
otherwise; TensorBoard through Accelerate's trackers when asked. Only the main process writes."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn
from rich.text import Text

from ..evaluation.metrics import format_metric
from ..run_dir import RunDir


class RunReporter:
    def __init__(self, metrics_path: Path, accelerator: Any, config: Any, console: Console | None = None):
        self.path = metrics_path
        self.accelerator = accelerator
        self.main = accelerator.is_main_process
        self.console = console or Console(stderr=True)
        self.tracking = bool(accelerator.log_with)
        self.config = config
        self.progress: Progress | None = None
        self.task_id: Any = None
        self.total = 0
        self.started = time.time()
        self.first_step = 0
        self.last: dict[str, Any] = {}

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self, step: int, total: int, headline: str) -> None:
        self.total, self.first_step, self.started = total, step, time.time()
        if not self.main:
            return
        self.console.print(headline, highlight=False, soft_wrap=True)
        if self.tracking:
            self.accelerator.init_trackers(self.config.tracker_project, config=_flat(self.config.to_dict()))
        if self.console.is_terminal:
            self.progress = Progress(
                TextColumn("[bold]train[/]"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(),
                MeanStepEta(),
                console=self.console,
                transient=False,
            )
            self.progress.start()
            self.task_id = self.progress.add_task("train", total=total, completed=step, status="", first_step=step)

    def advance(self, step: int) -> None:
        if self.progress is not None:
            self.progress.update(self.task_id, completed=step)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def finish(self, results: dict[str, Any]) -> None:
        if not self.main:
            return
        test = ", ".join(" ".join(format_metric(k, v)) for k, v in results["test"].items())
        self.console.print(
            f"best step {results['best_step']} (validation {results['main_metric']} "
            f"{results['validation'][results['main_metric']]:.2f}); test: {test}",
            highlight=False,
            soft_wrap=True,  # one line, also when piped (a terminal wraps it itself)
        )
        self.console.print(f"run folder: {self.path.parent}", highlight=False, soft_wrap=True)

    def note(self, text: str) -> None:
        if self.main:
            self.console.print(text, highlight=False, soft_wrap=True)

    # -- records -----------------------------------------------------------------------------------

    def _write(self, record: dict[str, Any]) -> None:
        if not self.main:
            return
        with RunDir(self.path.parent).writing(self.path), open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.tracking:
            prefix = "/".join(str(part) for part in (record["kind"], record.get("task")) if part)
            values = {f"{prefix}/{k}": v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"}
            self.accelerator.log(values, step=record["step"])

    def train_log(self, record: dict[str, Any]) -> None:
        record = {"kind": "train", **record}
        self._write(record)
        if not self.main:
            return
        lrs = "/".join(f"{v:.1e}" for k, v in record.items() if k.startswith("lr_"))
        status = f"loss {record['loss']:.4f}  lr {lrs}  {record['tokens_per_s']:,.0f} tok/s"
        if self.progress is not None:
            self.progress.update(self.task_id, status=status)
        else:
            step = record["step"]
            done = step - self.first_step
            eta = (time.time() - self.started) / max(done, 1) * (self.total - step)
            self.console.print(f"step {step}/{self.total}  {status}  ETA {_duration(eta)}", highlight=False)

    def eval_log(self, step: int, split: str, result: Any, best: bool, task: str | None = None) -> None:
        """One split's metrics; `task` names the task of a multi-task run (its records carry it)."""
        metrics = result.metrics
        named = {"task": task} if task is not None else {}
        self._write({"kind": split, "step": step, **named, "examples": result.count, **metrics})
        if self.main:
            shown = ", ".join(" ".join(format_metric(k, v)) for k, v in metrics.items())
            where = f"{split} {task}" if task is not None else split
            self.console.print(f"step {step} {where}: {shown}{'  (best so far)' if best else ''}", highlight=False)

    def mean_log(self, step: int, split: str, mean: float, best: bool) -> None:
        """A multi-task run's selection metric: the mean of its tasks' main metrics."""
        self._write({"kind": split, "step": step, "task": "mean", "mean": mean})
        if self.main:
            note = "  (best so far)" if best else ""
            self.console.print(f"step {step} {split} mean of the tasks: {mean:.2f}{note}", highlight=False)


class MeanStepEta(ProgressColumn):
    """Time left at the mean pace of the steps done in this process (evaluations included). Rich's own
    column averages the last 30 s only, so it showed -:--:-- for as long as one step took longer than that
    (a CPU, a large model)."""

    def render(self, task: Task) -> Text:
        done = task.completed - task.fields.get("first_step", 0)
        if task.finished:
            return Text("ETA 0:00:00", style="progress.remaining")
        if done <= 0 or not task.elapsed:
            return Text("ETA after the first step", style="progress.remaining")
        return Text(f"ETA {_duration(task.elapsed / done * task.remaining)}", style="progress.remaining")


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _flat(config: dict[str, Any]) -> dict[str, Any]:
    # TensorBoard's hparams take scalars and strings only.
    return {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in config.items()}
