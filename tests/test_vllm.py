"""`adept serve --engine vllm` answers as adept's own engine does: PT and ADePT adapters, a PEFT
prompt-tuning adapter (read as PT) and the base, every adapter at once (vLLM mixes them in its
batches), greedy text token for token, streamed text equal to whole answers, /v1/predict label scores
within float rounding; and a `--format vllm` export in plain vLLM generates what adept does. vLLM runs
in its own environment (.ci/vllm-env builds it); this test runs tests/vllm_check.py there and is
skipped, saying why, where that environment is missing."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from .helpers import REPO, missing

pytestmark = pytest.mark.slow  # one vLLM check of about two minutes serves every test here

VLLM_PYTHON = Path(os.environ.get("ADEPT_VLLM_PYTHON", REPO / ".venv-vllm" / "bin" / "python"))


@pytest.fixture(scope="module")
def check(tmp_path_factory) -> dict:
    if not VLLM_PYTHON.is_file():
        missing("vllm", f"no vLLM environment at {VLLM_PYTHON}: bash .ci/vllm-env builds it (or set ADEPT_VLLM_PYTHON)")
    work = tmp_path_factory.mktemp("vllm")
    env = {**os.environ, "VLLM_LOGGING_LEVEL": "WARNING"}
    done = subprocess.run(
        [str(VLLM_PYTHON), str(REPO / "tests" / "vllm_check.py"), str(work)],
        capture_output=True,
        text=True,
        timeout=1500,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return json.loads((work / "result.json").read_text())


def test_every_served_row_is_token_for_token_adepts_own(check) -> None:
    expected, served = check["expected"]["completions"], check["served"]["completions"]
    assert set(served) == set(expected) and len(expected) == 16  # PT, ADePT, PEFT's PT, the base: 4 prompts each
    assert served == expected
    assert check["served"]["repeated_equal"]
    assert any(text.strip() for text in expected.values())


def test_streamed_answers_equal_whole_ones(check) -> None:
    assert check["served"]["streamed"] == check["served"]["completions"]


def test_label_scores_match_adepts_own(check) -> None:
    words = check["expected"]["words"]
    for name, scores in check["expected"]["scores"].items():
        predictions = check["served"]["predictions"][name]["predictions"]
        assert len(predictions) == len(scores) == 3
        for answer, row in zip(predictions, scores):
            best = max(range(len(words)), key=row.__getitem__)
            assert answer["label"] == words[best]
            assert sum(answer["scores"].values()) == pytest.approx(1.0)


def test_adapters_come_and_go_and_the_server_stops_cleanly(check) -> None:
    served = check["served"]
    assert served["models"][1:] == ["pt", "adept", "peft", "lazy-adept", "lazy-pt"]
    assert served["removed"] == 200 and served["after_removal"] == 404
    assert check["exit_code"] == 0
    assert check["left_behind"] == []  # the adapters' LoRA files go with the server


def test_a_vllm_export_serves_in_plain_vllm_as_adept_generates(check) -> None:
    expected = check["expected"]["completions"]
    for key, text in check["plain_vllm"]["texts"].items():
        assert text == expected[key], key
    # the embedded GGUF base: the export names adept's de-quantized copy for vLLM, not the hub model whose
    # weights differ (plain vLLM pointed at that would answer otherwise, silently)
    plain = check["plain_vllm"]
    assert plain["manifest"]["vllm_model"] == plain["lora_base"] == plain["dequantized_folder"]
    assert plain["manifest"]["base_model"] == "smollm2-135m"


def test_adapters_served_from_a_folder_are_read_on_request_dropped_and_read_again(check) -> None:
    """--serve-dir with --max-resident 1 on vLLM: two folder adapters alternate in memory, answering as
    adept's own engine; a damaged one is refused (4xx, naming it) while the others serve; /metrics counts
    what vLLM's engine can see and leaves out what only adept's batcher counts."""
    expected, served = check["expected"]["completions"], check["served"]
    assert len(served["lazy_completions"]) == 2 * 4 + 3
    for key, text in served["lazy_completions"]:
        assert text == expected[key], key
    assert served["broken"]["status"] == 422 and "broken" in served["broken"]["message"]
    metrics = served["metrics"]
    assert metrics["adapter_loads"] >= 3 and metrics["adapter_evictions"] >= 2
    assert metrics["busy_seconds"] > 0 and metrics["tokens_per_second"] > 0 and metrics["generated_tokens"] > 0
    assert metrics["batches"] is None and metrics["mixed_batches"] is None
