"""Experiment trackers through Accelerate (`report_to: [tensorboard, wandb, mlflow, ...]`): every
training and evaluation record of metrics.jsonl also goes to each tracker, with the run's resolved config.

Each tracker is named after the run: W&B and MLflow runs are called by the run folder's name in the
project / experiment `tracker_project`; TensorBoard writes to <run>/tensorboard, W&B to <run>/wandb;
MLflow logs where $MLFLOW_TRACKING_URI says (MLflow's own default otherwise); the others that need a
folder get <run>/<tracker>.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from ..run_dir import TENSORBOARD_DIR, RunDir
from .config import TrainConfig, TrainConfigError

# tracker -> the packages that provide it (any one of them)
PACKAGES = {
    "tensorboard": ("tensorboard", "tensorboardX"),
    "wandb": ("wandb",),
    "mlflow": ("mlflow",),
    "comet_ml": ("comet_ml",),
    "aim": ("aim",),
    "clearml": ("clearml",),
    "dvclive": ("dvclive",),
    "swanlab": ("swanlab",),
    "trackio": ("trackio",),
}


def tracker_names(config: TrainConfig) -> list[str]:
    names = list(config.report_to or [])
    if config.tensorboard and "tensorboard" not in names:
        names.append("tensorboard")
    return names


def require_packages(names: list[str]) -> None:
    """One line naming what to install, before any model loads."""
    for name in names:
        packages = PACKAGES[name]
        if not any(importlib.util.find_spec(package) for package in packages):
            option = "tensorboard=true" if name == "tensorboard" else f"report_to {name}"
            raise TrainConfigError(f"{option} needs the {packages[0]} package: pip install {packages[0]}")


def make_trackers(names: list[str], run: RunDir, project: str) -> list[Any]:
    """Accelerate tracker objects (they start when the training loop calls `init_trackers`)."""
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS, MLflowTracker, TensorBoardTracker, WandBTracker

    run_name = run.path.resolve().name
    trackers = []
    for name in names:
        if name == "tensorboard":
            trackers.append(TensorBoardTracker("", str(run.path / TENSORBOARD_DIR)))
        elif name == "wandb":
            trackers.append(WandBTracker(project, name=run_name, dir=str(run.path)))
        elif name == "mlflow":  # the store is MLflow's choice: $MLFLOW_TRACKING_URI, else its default
            trackers.append(MLflowTracker(experiment_name=project, run_name=run_name))
        else:
            kind = LOGGER_TYPE_TO_CLASS[name]
            trackers.append(kind(project, str(run.path / name)) if kind.requires_logging_directory else kind(project))
    return trackers


def close_trackers(accelerator: Any, names: list[str]) -> None:
    """End every tracker's run, waiting until its records are written: W&B's `finish` returns before its
    service process has written the offline run file (seen with wandb 0.31 on a busy machine), and only
    `wandb.teardown` waits for it."""
    accelerator.end_training()
    if "wandb" in names and accelerator.is_main_process:
        import wandb

        wandb.teardown()
