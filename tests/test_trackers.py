"""report_to: the run's records reach real trackers, offline: MLflow's local file store (read back with
MLflow's own client) and W&B in offline mode (its run folder and summary); a missing package is one line."""

from __future__ import annotations

import importlib.util
import json

import pytest

from adept_cli.training import train
from adept_cli.training.config import TrainConfigError

from .helpers import import_or_missing, read_jsonl, stories_config


def test_mlflow_gets_the_metrics_and_the_config(tmp_path, monkeypatch) -> None:
    import_or_missing("mlflow", "trackers")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps its local file store behind this
    train(stories_config(tmp_path, "steps=4", "log_every=2", "eval_every=4", "report_to=mlflow",
                         "tracker_project=adept-test"))  # fmt: skip
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("adept-test")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "run"
    losses = [m.value for m in client.get_metric_history(run.info.run_id, "train/loss")]
    logged = [r["loss"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "train"]
    assert losses == pytest.approx(logged)
    assert run.data.metrics["test/accuracy"] == pytest.approx(
        json.loads((tmp_path / "run" / "results.json").read_text())["test"]["accuracy"]
    )
    assert run.data.params["method"] == "adept" and run.data.params["steps"] == "4"


@pytest.mark.slow
def test_wandb_offline_writes_its_run(tmp_path, monkeypatch) -> None:
    import_or_missing("wandb", "trackers")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    train(stories_config(tmp_path, "steps=4", "log_every=2", "eval_every=4", "report_to=wandb"))
    (store,) = (tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb")  # what `wandb sync` uploads
    records = store.read_bytes()
    for key in (b"train/loss", b"train/lr_prompt", b"validation/accuracy", b"test/accuracy"):
        assert key in records, key
    for line in read_jsonl(tmp_path / "run" / "metrics.jsonl"):
        if line["kind"] == "train":  # every logged value, as W&B stores it (JSON text)
            assert json.dumps(line["loss"]).encode() in records


def test_a_tracker_without_its_package_or_unknown_is_one_line(tmp_path, monkeypatch) -> None:
    with pytest.raises(TrainConfigError, match="report_to: unknown tracker neptune"):
        stories_config(tmp_path, "report_to=neptune")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(TrainConfigError, match="report_to wandb needs the wandb package: pip install wandb"):
        train(stories_config(tmp_path, "steps=2", "report_to=wandb"))
    assert not (tmp_path / "run").exists()


def test_a_run_stopped_mid_way_ends_its_tracker_run_and_the_next_run_starts_its_own(tmp_path, monkeypatch) -> None:
    """A search prunes trials by raising from the validation hook and goes on in the same process: the
    stopped run's MLflow run is ended, and the next run gets a run of its own (MLflow refuses a second
    active run)."""
    import_or_missing("mlflow", "trackers")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")

    class Stop(Exception):
        pass

    def stop(step: int, metric: float) -> None:
        raise Stop

    settings = ["steps=4", "log_every=2", "eval_every=2", "report_to=mlflow", "tracker_project=adept-test"]
    with pytest.raises(Stop):
        train(stories_config(tmp_path / "a", *settings), on_validation=stop)
    train(stories_config(tmp_path / "b", *settings))
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("adept-test")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2 and all(run.info.status == "FINISHED" for run in runs)
    stopped = next(run for run in runs if "test/accuracy" not in run.data.metrics)
    assert [m.step for m in client.get_metric_history(stopped.info.run_id, "train/loss")] == [2]
