"""Quantized bases through bitsandbytes (its CPU backend here): a 4-bit stories260K trains (the loss falls)
with the prompt, offsets and optimizer state in fp32; adapters move between quantized and full-precision
bases; an unsupported device or a missing package is said before any loading."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from adept_cli import hf, load_adapter
from adept_cli.trained import load_from_adapter, load_from_run
from adept_cli.training import train
from adept_cli.training.checkpoint import read_state
from adept_cli.training.config import TrainConfigError

from .helpers import STORIES, import_or_missing, missing, model_path, read_jsonl, stories_config

bitsandbytes = import_or_missing("bitsandbytes", "bitsandbytes")
if "cpu" not in getattr(bitsandbytes, "supported_torch_devices", ()):
    missing("bitsandbytes", "this bitsandbytes has no CPU backend")


def test_settings_are_checked(tmp_path) -> None:
    with pytest.raises(TrainConfigError, match="quantization must be one of none, 4bit, 8bit; got '3bit'"):
        stories_config(tmp_path, "quantization=3bit")
    with pytest.raises(TrainConfigError, match="full fine-tuning cannot train a quantized base"):
        stories_config(tmp_path, "quantization=4bit", "method=full")


def test_an_unsupported_device_or_a_missing_package_is_said_before_any_loading(tmp_path, monkeypatch) -> None:
    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("adept_cli.training.setup.load_model", no_loading)
    monkeypatch.setattr("adept_cli.training.setup.load_task_data", no_loading)
    monkeypatch.setattr(bitsandbytes, "supported_torch_devices", {"cuda"})
    with pytest.raises(TrainConfigError, match=r"bitsandbytes .* cannot run on cpu \(it runs on cuda\)"):
        train(stories_config(tmp_path, "quantization=4bit"))
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as if not installed
    with pytest.raises(TrainConfigError, match=r"needs bitsandbytes: pip install 'adept-cli\[quantization\]'"):
        train(stories_config(tmp_path, "quantization=8bit"))
    assert hf.quantization_problem("none", "mps") is None


def test_a_gguf_base_is_refused_with_the_reason() -> None:
    with pytest.raises(hf.ModelError, match="GGUF file.*use quantization=none"):
        hf.load_model("smollm2-135m", quantization="4bit")


@pytest.fixture(scope="module")
def quantized_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("q4")
    results = train(stories_config(tmp, "quantization=4bit", "steps=12", "log_every=1", "eval_every=12"))
    return tmp / "run", results


@pytest.mark.slow
def test_a_4bit_base_trains_with_fp32_adapter_and_optimizer_state(quantized_run) -> None:
    run, results = quantized_run
    losses = [r["loss"] for r in read_jsonl(run / "metrics.jsonl") if r.get("kind") == "train"]
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3  # the loss falls
    loaded = load_from_run(run)
    layer = loaded.model.base.model.layers[0].self_attn.q_proj
    assert isinstance(layer, bitsandbytes.nn.Linear4bit) and layer.weight.quant_type == "nf4"
    trainable = [p for p in loaded.model.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    checkpoint = next((run / "checkpoints").iterdir())
    optimizer = read_state(checkpoint, "optimizer")
    moments = [t for state in optimizer["state"].values() for t in state.values() if torch.is_tensor(t) and t.dim()]
    assert moments and all(t.dtype == torch.float32 for t in moments)
    saved = json.loads((run / "best" / "adapter_config.json").read_text())
    assert saved["evaluation"]["base_quantization"] == "4bit"
    assert "quantization: 4bit" in (run / "config.yaml").read_text()


def test_adapters_move_between_quantized_and_full_precision_bases(quantized_run, tmp_path) -> None:
    run, _ = quantized_run
    ids = torch.tensor([[1, 306, 471, 263, 931]])
    on_4bit = load_from_run(run).model
    on_full = load_from_adapter(run / "best").model  # an adapter loads on the base it names, full precision
    assert not any("4bit" in type(m).__name__ for m in on_full.modules())
    with torch.no_grad():
        quantized_logits, full_logits = on_4bit(input_ids=ids).logits, on_full(input_ids=ids).logits
    assert torch.isfinite(full_logits).all()
    # the same adapter on the two bases: the same trained tensors, close predictions
    assert (quantized_logits.argmax(-1) == full_logits.argmax(-1)).float().mean() >= 0.6
    # and a full-precision adapter on an 8-bit base
    full_run = tmp_path / "full"
    train(stories_config(tmp_path, "steps=2", "eval_every=2", name="full"))
    base = hf.load_model(model_path(STORIES), quantization="8bit")
    model = load_adapter(full_run / "best", base=base, base_model_name=model_path(STORIES))
    assert any(type(m).__name__ == "Linear8bitLt" for m in model.modules())
    prompt = next(p for p in model.parameters() if p.requires_grad)
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=ids).logits).all()
    assert prompt.dtype == torch.float32


def test_none_is_a_quantization_choice_in_recipes_and_run_configs(tmp_path) -> None:
    from adept_cli.training.config import build_config, dump_config

    config = stories_config(tmp_path, "quantization=none")
    assert config.quantization == "none"
    saved = tmp_path / "config.yaml"
    saved.write_text(dump_config(config))
    assert build_config(saved).quantization == "none"  # a run's config.yaml reads back


def test_eval_chooses_the_base_precision(quantized_run) -> None:
    from typer.testing import CliRunner

    from adept_cli.cli import app

    run, _ = quantized_run
    runner = CliRunner()
    scores = {}
    for option in ([], ["--quantization", "none"], ["--quantization", "8bit"]):
        result = runner.invoke(app, ["eval", "--run", str(run), "--limit", "8", "--scoring", "rank", "--json", *option])
        assert result.exit_code == 0, result.output
        scores[" ".join(option) or "as trained"] = json.loads(result.stdout)["metrics"]["accuracy"]
    assert set(scores) == {"as trained", "--quantization none", "--quantization 8bit"}
    refused = runner.invoke(app, ["eval", "--run", str(run), "--quantization", "2bit"])
    assert refused.exit_code == 2 and "--quantization must be one of none, 4bit, 8bit" in refused.output


def test_a_merged_export_of_a_4bit_run_reloads_4bit_with_the_same_logits(quantized_run, tmp_path) -> None:
    """The export is checked against the adept runtime on reload (plain transformers + PEFT); the reloaded
    base keeps its 4-bit layers and its embedding table holds the merged offsets."""
    from typer.testing import CliRunner

    from adept_cli.cli import app

    run, _ = quantized_run
    out = tmp_path / "merged"
    result = CliRunner().invoke(app, ["export", "--run", str(run), "--format", "merged", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["max_logit_difference"] < 1e-3
    saved = json.loads((out / "config.json").read_text())["quantization_config"]
    assert saved["quant_method"] == "bitsandbytes" and saved["load_in_4bit"]


def test_a_sweep_does_not_keep_quantized_bases(monkeypatch) -> None:
    """bitsandbytes' layers are not deep-copied safely: inside a sweep each run reads a quantized base."""
    reads = []
    read_model = hf._read_model
    monkeypatch.setattr(hf, "_read_model", lambda *args: reads.append(args[2]) or read_model(*args))
    with hf.reuse_loaded_models():
        hf.load_model(model_path(STORIES), quantization="4bit")
        hf.load_model(model_path(STORIES), quantization="4bit")
        assert reads == ["4bit", "4bit"] and hf._kept_models == {}


def test_a_4bit_base_computes_the_same_with_and_without_gradients() -> None:
    """bitsandbytes repacks a 4-bit layer for its AVX512-BF16 CPU kernel at the first forward without
    gradients and computes it in bf16 from then on (and fails on layer shapes like stories260K's 172):
    adept keeps every layer on the generic kernel, so evaluation and training see the same model."""
    from bitsandbytes.nn import Linear4bit

    base = hf.load_model(model_path(STORIES), quantization="4bit")
    layers = [module for module in base.modules() if isinstance(module, Linear4bit)]
    assert layers and not any(layer.support_avx512bf16_for_cpu for layer in layers)
    ids = torch.tensor([[1, 403, 407, 263, 223, 29]])
    with torch.no_grad():
        evaluated = base(ids).logits
    base.train()
    trained = base(ids).logits.detach()
    assert torch.equal(evaluated, trained)
