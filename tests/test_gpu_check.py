"""bench/gpu_check.py, the prepared GPU check, as a CPU dry run (tiny shapes): every stage runs, every
check passes, and the JSON holds what the GPU run will report. On a GPU the same script runs at real sizes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_gpu_check_runs_on_a_cpu_at_tiny_sizes(tmp_path: Path) -> None:
    output = tmp_path / "gpu_check.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu_check.py"), "--device", "cpu", "--tiny", "--output", str(output)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(output.read_text())
    assert report["failed"] == [] and report["device"] == "cpu" and report["tiny"] is True
    results = report["results"]
    stages = (
        "shared_logits",
        "cached_generation",
        "training_step",
        "train_speed",
        "generation_speed",
        "serving",
        "plan",
    )
    assert all(stage in results for stage in stages)
    assert results["shared_logits"]["smollm2-135m"]["passed"] is True
    assert all(results["cached_generation"][shape]["passed"] for shape in ("smollm2-135m", "t5-base", "llama-1b"))
    assert set(results["train_speed"]["llama-1b"]) >= {"adept-60", "pt-100", "lora-16", "peft-pt-100"}
    assert all(arm["steps_per_s"] > 0 for arm in results["train_speed"]["t5-base"].values() if isinstance(arm, dict))
    assert {"adept-120", "base", "peft-pt-200"} <= set(results["generation_speed"]["smollm2-135m"])
    assert results["serving"]["smollm2-135m"]["new_tokens_per_s"] > 0
    assert results["plan"]["smollm2-135m"]["measured_mb"] > 0
    assert "versions" in report["machine"]


def test_a_failing_check_fails_the_run() -> None:
    sys.path.insert(0, str(REPO / "bench"))
    from gpu_check import failures

    results = {
        "shared_logits": {"a": {"passed": False}},
        "training_step": {"b": {"pt": {"passed": True}, "lora": {"passed": False}}},
        "serving": {"c": {"error": "RuntimeError: boom"}},
        "seconds": 1.0,
    }
    assert failures(results) == ["shared_logits/a", "training_step/b/lora", "serving/c: RuntimeError: boom"]
