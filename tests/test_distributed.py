"""Two processes on CPU (gloo) through `accelerate launch --multi_gpu`, the command users run on several GPUs
(without CUDA adept runs the processes on gloo): every evaluation
example counts exactly once (7 examples over 2 processes), and the trained adapter matches a single
process with the same global batch."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import torch
from safetensors.torch import load_file

from adept_cli.training import build_config, train

from .helpers import SMOKE, STORIES, model_path, read_jsonl

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


def test_two_process_training_matches_one_process(tmp_path) -> None:
    one = tmp_path / "one"
    train(build_config(SMOKE, {"model": model_path(STORIES), "output_dir": str(one)}, SETTINGS))

    two = tmp_path / "two"
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(_free_port()),
        "-m",
        "adept_cli",
        "train",
        "--recipe",
        str(SMOKE),
        "--model",
        model_path(STORIES),
        "-o",
        str(two),
        *SETTINGS,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "2 processes" in done.stdout + done.stderr

    records = {name: read_jsonl(tmp_path / name / "metrics.jsonl") for name in ("one", "two")}
    validations = [r for r in records["two"] if r["kind"] == "validation"]
    assert [r["examples"] for r in validations] == [7, 7]  # not 8: no padded duplicate is counted
    single = [r["accuracy"] for r in records["one"] if r["kind"] == "validation"]
    assert [r["accuracy"] for r in validations] == single and 0 < single[0] < 100  # rank scoring: a real metric
    losses = [[r["loss"] for r in records[n] if r["kind"] == "train"] for n in ("one", "two")]
    assert losses[0] == __import__("pytest").approx(losses[1], rel=1e-5)

    final = {
        n: load_file(str(tmp_path / n / "checkpoints" / "step_00000004" / "trainable.safetensors"))
        for n in ("one", "two")
    }
    for key, value in final["one"].items():
        torch.testing.assert_close(final["two"][key], value, atol=1e-5, rtol=1e-4)
    results = [json.loads((tmp_path / n / "results.json").read_text()) for n in ("one", "two")]
    assert results[0]["test"] == results[1]["test"] and results[1]["examples"]["test"] == 5


def test_the_ready_made_accelerate_configs_parse_with_accelerates_own_reader() -> None:
    """recipes/accelerate/*.yaml: read by Accelerate's config reader, which refuses unknown keys. (FSDP and
    ZeRO-3 training itself needs GPUs; it is not exercised here.)"""
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
