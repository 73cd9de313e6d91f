"""The floor adept stands on: the families that must share the prompt do, under the installed versions;
`adept env` reports versions against the tested ranges and the lock; runs and adapters record the versions
they were made under, and evaluating them under others says so."""

from __future__ import annotations

import json
import shutil

import pytest
import transformers
from packaging.specifiers import SpecifierSet
from typer.testing import CliRunner

from adept_cli import MixedAdapterModel, PromptTunedModel
from adept_cli.cli import app
from adept_cli.environment import locked_versions, package_status, recorded_versions, version_changes

from .helpers import MODEL_FACTORIES, STORIES, model_path, read_jsonl, small_config, stories_config, tiny_qwen2

runner = CliRunner()
MUST_SHARE = {"llama": MODEL_FACTORIES["llama"], "gpt2": MODEL_FACTORIES["gpt2"], "qwen2": tiny_qwen2}


@pytest.mark.parametrize("family", list(MUST_SHARE))
def test_families_that_can_share_the_prompt_do_so_by_default(family) -> None:
    """share_prompt=auto must not fall back on a plain full-attention decoder: a fallback is correct but
    2x slower, so a new transformers release that changes the cache API has to fail here, not in speed."""
    base, tokenizer = MUST_SHARE[family]()
    single = PromptTunedModel(base, small_config("adept"), tokenizer=tokenizer)
    why = f"transformers {transformers.__version__}: {single.not_shared_because}"
    assert single.shares_prompt, why
    single.unwrap()
    mixed = MixedAdapterModel(base)
    assert mixed.not_shared_because is None, f"transformers {transformers.__version__}: {mixed.not_shared_because}"


def test_adept_env_reports_versions_devices_sandbox_and_the_shared_prompt() -> None:
    result = runner.invoke(app, ["env", "--model", model_path(STORIES), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["packages"]["transformers"]["version"] == transformers.__version__
    assert report["packages"]["torch"]["status"] in ("locked", "in the tested range")
    assert report["model"]["shares_prompt"] is True
    assert isinstance(report["devices"]["cpu_cores"], int) and report["sandbox"]
    table = runner.invoke(app, ["env"])
    assert table.exit_code == 0 and "transformers" in table.output and "sandbox for generated code" in table.output


def test_env_of_a_seq2seq_model_says_why_it_cannot_share(t5_dir) -> None:
    result = runner.invoke(app, ["env", "--model", t5_dir, "--json"])
    assert result.exit_code == 0, result.output
    model = json.loads(result.stdout)["model"]
    assert model["shares_prompt"] is False and "bidirectional" in model["shared_prompt"]


def test_package_status_against_the_lock_and_the_ranges(tmp_path) -> None:
    lock = tmp_path / "requirements.lock"
    lock.write_text("torch==2.13.0\n    # via adept-cli\ntransformers==5.23.0 ; python_version >= '3.10'\n")
    locked = locked_versions(lock)
    assert locked == {"torch": "2.13.0", "transformers": "5.23.0"}
    ranges = {"torch": SpecifierSet(">=2.2,<=2.14.1"), "transformers": SpecifierSet(">=5.0,<=5.24.0")}
    assert package_status("torch", "2.13.0+cpu", ranges, locked) == "locked"
    assert package_status("transformers", "5.24.0", ranges, locked) == "in the tested range"
    assert package_status("transformers", "5.25.0", ranges, locked) == "outside the tested range (<=5.24.0,>=5.0)"
    assert package_status("vllm", None, ranges, locked) == "not installed"
    assert package_status("tokenizers", "0.23.3", ranges, None) == "not declared"


def test_version_changes_name_each_package_that_moved() -> None:
    current = {"python": "3.11.7", "torch": "2.13.0", "transformers": "5.24.0"}
    recorded = {"python": "3.11.7", "torch": "2.13.0", "transformers": "5.23.0", "peft": "0.21.2"}
    assert version_changes(recorded, current) == ["transformers 5.23.0 -> 5.24.0", "peft 0.21.2 -> absent"]
    assert version_changes(None, current) == [] and version_changes(current, current) == []


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    from adept_cli.training import train

    tmp = tmp_path_factory.mktemp("env-run")
    train(stories_config(tmp, "steps=2", "eval_every=2", "scoring=rank", "test_limit=4", "validation_limit=4"))
    return tmp / "run"


def test_a_run_records_its_versions_and_the_shared_prompt(small_run) -> None:
    import yaml

    config = yaml.safe_load((small_run / "config.yaml").read_text())
    results = json.loads((small_run / "results.json").read_text())
    for environment in (config["environment"], results["environment"]):
        assert environment["versions"] == recorded_versions()
        assert environment["shared_prompt"] == {"shared": True, "why_not": None}
    adapter = json.loads((small_run / "best" / "adapter_config.json").read_text())
    assert adapter["versions"] == recorded_versions()
    assert [r["kind"] for r in read_jsonl(small_run / "metrics.jsonl")][-1] == "test"


def test_evaluating_a_run_made_under_other_versions_says_what_changed(small_run, tmp_path) -> None:
    import yaml

    copy = tmp_path / "run"
    shutil.copytree(small_run, copy)
    config = yaml.safe_load((copy / "config.yaml").read_text())
    config["environment"]["versions"]["transformers"] = "5.0.0"
    (copy / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    result = runner.invoke(app, ["eval", "--run", str(copy), "--limit", "2", "--json"])
    assert result.exit_code == 0, result.output
    assert f"transformers 5.0.0 -> {transformers.__version__}" in result.stderr
    same = runner.invoke(app, ["eval", "--run", str(small_run), "--limit", "2", "--json"])
    assert same.exit_code == 0 and "other package versions" not in same.stderr
