"""Two processes on CPU (gloo) through `accelerate launch --multi_gpu`, the command users run on several GPUs
(without CUDA adept runs the processes on gloo): every evaluation
example counts exactly once (7 examples over 2 processes), and the trained adapter matches a single
process with the same global batch."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from adept_cli.training import build_config, train

from .helpers import SMOKE, STORIES, missing, model_path, read_jsonl

SETTINGS = [
    "scoring=rank",
    "steps=4",
    "eval_every=2",
    "batch_size=4",
    "validation_limit=7",
    "test_limit=5",
    "max_grad_norm=null",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(run_dir, *launch_options: str, succeed: bool = True) -> subprocess.CompletedProcess:
    """`accelerate launch` of two processes training the smoke recipe into `run_dir`."""
    command = [sys.executable, "-m", "accelerate.commands.launch", *launch_options, "--num_processes", "2"]
    command += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    command += ["--main_process_port", str(_free_port()), "-m", "adept_cli", "train", "--recipe", str(SMOKE)]
    command += ["--model", model_path(STORIES), "-o", str(run_dir), *SETTINGS]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert (done.returncode == 0) == succeed, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _assert_same_training(tmp_path, one: str, two: str) -> None:
    """The two-process run evaluated every example once and trained the adapter the single process did."""
    records = {name: read_jsonl(tmp_path / name / "metrics.jsonl") for name in (one, two)}
    validations = [r for r in records[two] if r["kind"] == "validation"]
    assert [r["examples"] for r in validations] == [7, 7]  # not 8: no padded duplicate is counted
    single = [r["accuracy"] for r in records[one] if r["kind"] == "validation"]
    assert [r["accuracy"] for r in validations] == single and 0 < single[0] < 100  # rank scoring: a real metric
    losses = [[r["loss"] for r in records[n] if r["kind"] == "train"] for n in (one, two)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    final = {
        n: load_file(str(tmp_path / n / "checkpoints" / "step_00000004" / "trainable.safetensors")) for n in (one, two)
    }
    assert set(final[two]) == set(final[one])  # only the trainable tensors, whatever the sharding
    for key, value in final[one].items():
        torch.testing.assert_close(final[two][key], value, atol=1e-5, rtol=1e-4)
    results = [json.loads((tmp_path / n / "results.json").read_text()) for n in (one, two)]
    assert results[0]["test"] == results[1]["test"] and results[1]["examples"]["test"] == 5


@pytest.fixture(scope="module")
def single_process_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("distributed")
    train(build_config(SMOKE, {"model": model_path(STORIES), "output_dir": str(tmp / "one")}, SETTINGS))
    return tmp


@pytest.mark.slow
def test_two_process_training_matches_one_process(single_process_run) -> None:
    done = _launch(single_process_run / "two", "--multi_gpu")
    assert "2 processes" in done.stdout + done.stderr
    _assert_same_training(single_process_run, "one", "two")


@pytest.mark.slow
def test_fsdp_two_processes_match_one_process_or_say_why_not(single_process_run) -> None:
    """FSDP (full shard, use_orig_params) over two processes equals one process. Accelerate runs FSDP on
    accelerators only: with fewer than two here, the launch must fail with adept's one-line reason, and
    the equality is skipped with it."""
    fsdp = ["--use_fsdp", "--fsdp_sharding_strategy", "FULL_SHARD", "--fsdp_use_orig_params", "true"]
    fsdp += ["--fsdp_auto_wrap_policy", "NO_WRAP"]
    if torch.cuda.device_count() < 2:
        done = _launch(single_process_run / "fsdp", *fsdp, succeed=False)
        reason = next(line for line in done.stderr.splitlines() if line.startswith("error:"))
        assert "FSDP" in reason and "recipes/accelerate/ddp.yaml" in reason
        assert "no available devices" not in done.stderr  # not Accelerate's traceback from deep inside
        missing("gpu", f"FSDP cannot run on this machine ({torch.cuda.device_count()} GPUs): {reason}")
    _launch(single_process_run / "fsdp", *fsdp)
    _assert_same_training(single_process_run, "one", "fsdp")


def test_the_ready_made_accelerate_configs_parse_with_accelerates_own_reader() -> None:
    """recipes/accelerate/*.yaml: read by Accelerate's config reader, which refuses unknown keys. (ZeRO-3
    training needs GPUs and DeepSpeed; it is not exercised here.)"""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    from .helpers import REPO

    expected = {
        "ddp": DistributedType.MULTI_GPU,
        "fsdp": DistributedType.FSDP,
        "zero3": DistributedType.DEEPSPEED,
        "multi-node": DistributedType.MULTI_GPU,
    }
    found = {path.stem for path in (REPO / "recipes" / "accelerate").glob("*.yaml")}
    assert found == set(expected)
    for name, kind in expected.items():
        config = load_config_from_file(str(REPO / "recipes" / "accelerate" / f"{name}.yaml"))
        assert config.distributed_type == kind, name
    fsdp = load_config_from_file(str(REPO / "recipes" / "accelerate" / "fsdp.yaml")).fsdp_config
    assert fsdp["fsdp_use_orig_params"] is True  # frozen and trainable tensors share FSDP units
    assert (
        load_config_from_file(str(REPO / "recipes" / "accelerate" / "zero3.yaml")).deepspeed_config["zero_stage"] == 3
    )
