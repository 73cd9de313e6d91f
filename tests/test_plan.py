"""`adept plan`: the memory estimate, made from the config with fake tensors, against the measured peak of
one real training step (the profiler's memory timeline on this CPU) for stories260K, a tiny random T5 and
SmolLM2-135M; the quantized weights against bitsandbytes' real storage."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from adept_cli.cli import app
from adept_cli.hf import load_model
from adept_cli.training import build_config
from adept_cli.training.config import CPU_FORWARD_TOKENS
from adept_cli.training.plan import PlanError, measure_peak, plan_memory

from .helpers import STORIES, import_or_missing, model_path

runner = CliRunner()
TOLERANCE = 0.25  # the bound: within 25% of the measured peak


def settings(model: str, *overrides: str, batch_size: int = 8, max_length: int = 96):
    return build_config(None, {"model": model, "batch_size": batch_size, "max_length": max_length}, list(overrides))


def within_tolerance(config, target: int) -> float:
    estimate = plan_memory(config, target).total_bytes
    measured = measure_peak(config, target)
    assert abs(estimate / measured - 1) <= TOLERANCE, f"estimate {estimate:,} vs measured {measured:,}"
    return estimate / measured


@pytest.mark.parametrize("overrides", [(), ("gradient_checkpointing=true",), ("method=dept",), ("method=pt",)])
@pytest.mark.slow
def test_stories260k_estimate_is_within_25_percent(overrides) -> None:
    within_tolerance(settings(model_path(STORIES), *overrides), target=8)


@pytest.mark.slow
def test_checkpointing_plans_less_memory_as_it_measures_less() -> None:
    plain, checkpointed = settings(model_path(STORIES)), settings(model_path(STORIES), "gradient_checkpointing=true")
    assert plan_memory(checkpointed, 8).activation_bytes < 0.6 * plan_memory(plain, 8).activation_bytes
    assert measure_peak(checkpointed, 8) < measure_peak(plain, 8)


@pytest.mark.parametrize("overrides", [(), ("gradient_checkpointing=true",)])
@pytest.mark.slow
def test_a_tiny_random_t5_estimate_is_within_25_percent(t5_dir, overrides) -> None:
    within_tolerance(settings(t5_dir, *overrides, batch_size=4, max_length=64), target=16)


@pytest.mark.slow
def test_smollm2_estimate_is_within_25_percent() -> None:
    within_tolerance(settings("smollm2-135m", batch_size=4, max_length=128), target=8)


@pytest.mark.parametrize("quantization", ["4bit", "8bit"])
def test_quantized_weights_match_what_bitsandbytes_stores(quantization) -> None:
    import_or_missing("bitsandbytes", "bitsandbytes")
    planned = plan_memory(settings(model_path(STORIES), f"quantization={quantization}"), 8).weights_bytes
    model = load_model(model_path(STORIES), quantization=quantization)
    stored = {}
    for tensor in [*model.parameters(), *model.buffers()]:
        state = getattr(tensor, "quant_state", None)
        parts = [tensor, getattr(tensor, "SCB", None), getattr(state, "absmax", None)]
        parts.append(getattr(getattr(state, "state2", None), "absmax", None))
        for part in (p for p in parts if torch.is_tensor(p)):
            stored[part.untyped_storage().data_ptr()] = part.untyped_storage().nbytes()
    assert abs(planned / sum(stored.values()) - 1) <= TOLERANCE
    assert planned < 0.4 * plan_memory(settings(model_path(STORIES)), 8).weights_bytes


@pytest.mark.slow
def test_the_plan_reads_no_weights(monkeypatch) -> None:
    def no_weights(*args, **kwargs):
        raise AssertionError("weights were loaded")

    monkeypatch.setattr("adept_cli.hf.load_model", no_weights)
    monkeypatch.setattr("transformers.PreTrainedModel.from_pretrained", no_weights)
    plan = plan_memory(settings("smollm2-135m", batch_size=16, max_length=256), 32, device_type="cuda")
    assert plan.tokens_per_step == 16 * (256 + 32)  # a GPU keeps the micro-batch in one forward
    assert plan.weights_bytes > 500e6  # 135M fp32 parameters, tied embedding counted once
    assert plan.weights_bytes < 600e6


def test_cli_json_and_errors() -> None:
    result = runner.invoke(
        app,
        [
            "plan",
            "-m",
            model_path(STORIES),
            "--batch-size",
            "4",
            "--max-length",
            "32",
            "--target-length",
            "4",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["total_bytes"] == sum(
        plan[k] for k in ("weights_bytes", "trainable_bytes", "activation_bytes", "transient_bytes")
    )
    assert plan["tokens_per_step"] == 4 * 36 and plan["batch_size"] == 4
    refused = runner.invoke(app, ["plan", "-m", model_path(STORIES), "--method", "lora"])
    assert refused.exit_code == 2 and "covers the prompt methods" in refused.output
    too_many = runner.invoke(app, ["plan", "-m", model_path(STORIES), "--batch-size", "2", "--processes", "4"])
    assert too_many.exit_code == 2 and "leaves no row per forward" in too_many.output
    with pytest.raises(PlanError):
        plan_memory(settings(model_path(STORIES), "method=full"))


@pytest.mark.slow
def test_a_default_shaped_step_on_a_cpu_is_bounded_and_planned() -> None:
    """32 rows of the task's full length (sst2: 256 input tokens and its longest label word): on a CPU the
    step goes through forwards of at most CPU_FORWARD_TOKENS tokens, which bounds its peak, and the plan
    predicts the peak it measures."""
    default = build_config(None, {"model": model_path(STORIES)}, [])
    unsplit = build_config(None, {"model": model_path(STORIES)}, ["micro_batch_tokens=1000000"])
    plan = plan_memory(default)
    assert plan.micro_batch_rows == 32 and plan.source_tokens == 256
    assert plan.tokens_per_step <= CPU_FORWARD_TOKENS < plan_memory(unsplit).tokens_per_step
    measured, whole = measure_peak(default), measure_peak(unsplit)
    assert abs(plan.total_bytes / measured - 1) <= TOLERANCE, f"estimate {plan.total_bytes:,} vs {measured:,}"
    assert measured < 0.35 * whole  # activations of at most 2,048 tokens, not 32 x 258


@pytest.mark.slow
def test_measuring_prints_no_profiler_lines() -> None:
    command = [sys.executable, "-m", "adept_cli", "plan", "-m", model_path(STORIES), "--batch-size", "2"]
    command += ["--max-length", "16", "--target-length", "2", "--measure"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "measured peak" in done.stdout
    assert "USDT" not in done.stdout + done.stderr and "profiler_start" not in done.stdout + done.stderr
