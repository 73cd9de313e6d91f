"""The registry of prompt methods: a fourth method is one class and one registry line. The toy method here
(a soft prompt scaled by a learned scalar) trains through `adept train`'s loop, saves, reloads and serves
in a mixed batch beside PT, DePT and ADePT, each row computing what its adapter computes alone."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from torch import nn

from adept_cli import MixedAdapterModel, load_adapter, save_adapter
from adept_cli.prompt.config import ConfigError, MethodConfig, help_field
from adept_cli.prompt.methods import PromptMethod, get_method, method_names, register_method, unregister_method
from adept_cli.serving.engine import Engine
from adept_cli.serving.protocol import GenerationRow, Sampling
from adept_cli.training import TrainConfigError, train

from .helpers import (
    INPUTS,
    METHODS,
    MODEL_FACTORIES,
    SHORT_RUN,
    SMOKE,
    STORIES,
    model_path,
    perturb,
    read_jsonl,
    stories_config,
    wrap,
)


@dataclass
class ScaledPromptConfig(MethodConfig):
    """A soft prompt multiplied by one learned scalar."""

    method: ClassVar[str] = "scaled"


class Scale(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.value = nn.Parameter(torch.ones(()))


class ScaledPrompt(PromptMethod):
    name = "scaled"
    title = "scaled PT"
    config_class = ScaledPromptConfig

    def build_parts(self, config: MethodConfig, dim: int) -> dict[str, Any]:
        return {"scale": Scale()}

    def prompt_rows(self, adapter: Any) -> torch.Tensor:
        return adapter.prompt * adapter.scale.value


@pytest.fixture
def scaled():
    register_method(ScaledPrompt())  # the one registry line
    yield
    unregister_method("scaled")


def test_the_built_in_methods_are_registered_and_a_registered_one_is_known_everywhere(scaled) -> None:
    assert method_names() == ("adept", "dept", "pt", "scaled")
    assert get_method("adept").size_field == "bottleneck" and get_method("dept").offsets_follow == "positions"
    with pytest.raises(ConfigError, match="built-in"):
        unregister_method("adept")
    with pytest.raises(TrainConfigError, match="bottleneck applies to method adept, not scaled"):
        stories_config(Path("unused"), "method=scaled", "bottleneck=3")


@pytest.mark.slow
def test_a_fourth_method_trains_saves_reloads_and_serves_in_a_mixed_batch(scaled, tmp_path) -> None:
    results = train(stories_config(tmp_path, "method=scaled", "steps=6", "lr_offsets=0.05", "scoring=rank"))
    run = tmp_path / "run"
    assert results["method"] == "scaled" and results["trainable_params"] == 8 * 64 + 1
    losses = [r["loss"] for r in read_jsonl(run / "metrics.jsonl") if r["kind"] == "train"]
    assert len(losses) == 2 and all(loss == loss for loss in losses)
    trained = load_adapter(run / "best")  # the saved adapter reloads as its method's model
    assert trained.config.method == "scaled" and float(trained.adapter.scale.value) != 1.0

    others = {}
    for method in METHODS:  # the registry's real methods, with non-trivial tensors
        model, tokenizer = wrap(method, "llama", prompt_len=4 + len(others))
        perturb(model)
        save_adapter(model, tmp_path / method)
        others[method] = load_adapter(tmp_path / method)
    alone = {**others, "scaled": trained}
    base, tokenizer = MODEL_FACTORIES["llama"]()
    mixed = MixedAdapterModel(base.eval())
    for name in alone:
        mixed.add_adapter(name, tmp_path / name if name != "scaled" else run / "best")
    names = ["scaled", "pt", "dept", "scaled", "adept"]
    tokenizer.padding_side = "left"
    batch = tokenizer([INPUTS[i % len(INPUTS)] for i in range(len(names))], return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = mixed(batch["input_ids"], names, batch["attention_mask"]).logits
        tokens = mixed.generate(batch["input_ids"], names, batch["attention_mask"], max_new_tokens=5, do_sample=False)
        for row, name in enumerate(names):
            ids, mask = batch["input_ids"][row : row + 1], batch["attention_mask"][row : row + 1]
            own = alone[name].eval()(ids, mask).logits
            real = mask[0].bool()
            torch.testing.assert_close(logits[row][real], own[0][real], atol=1e-4, rtol=1e-4)
            single = alone[name].generate(ids[:, real], max_new_tokens=5, do_sample=False)
            assert tokens[row, -5:].tolist() == single[0, -5:].tolist(), name

    engine = Engine(MODEL_FACTORIES["llama"]()[0].eval(), tokenizer, model_path(STORIES))
    engine.add("scaled", run / "best")
    engine.add("adept", tmp_path / "adept")
    rows = [GenerationRow(name, engine.prompt_ids(name, INPUTS[0], 5), 5) for name in ("scaled", "adept")]
    served = engine.generate(rows, Sampling(temperature=0.0))
    for name, answer in zip(("scaled", "adept"), served):
        ids = torch.tensor([engine.prompt_ids(name, INPUTS[0], 5)])
        expected = alone[name].generate(ids, max_new_tokens=5, do_sample=False)[0, ids.shape[1] :]
        end = [i for i, token in enumerate(expected.tolist()) if token == tokenizer.eos_token_id][:1]
        text = tokenizer.decode(expected[: end[0] if end else None], skip_special_tokens=True)
        assert answer.text == text, name


# -- a method with a setting of its own, defined and registered here ------------------------------------


@dataclass
class GatedPromptConfig(MethodConfig):
    """A soft prompt, and each token's embedding scaled by a learned gate of that embedding."""

    method: ClassVar[str] = "gated"

    gate_bias: float = help_field("the gates' starting bias: embeddings start scaled by 2 sigmoid(bias)", default=0.0)


class TokenGate(nn.Module):
    def __init__(self, dim: int, bias: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(dim))
        self.bias = nn.Parameter(torch.tensor(float(bias)))

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        return 2 * torch.sigmoid(embeds @ self.weight + self.bias).unsqueeze(-1)


class GatedPrompt(PromptMethod):
    name = "gated"
    title = "gated PT"
    config_class = GatedPromptConfig
    settings = ("gate_bias",)
    offsets_follow = "tokens"

    def build_parts(self, config: GatedPromptConfig, dim: int) -> dict[str, Any]:
        return {"gate": TokenGate(dim, config.gate_bias)}

    def offsets(self, adapter: Any, ids: Any, embeds: Any, positions: Any) -> Any:
        return (adapter.gate(embeds.to(adapter.prompt.dtype)) - 1).to(embeds.dtype) * embeds


@pytest.fixture
def gated():
    register_method(GatedPrompt())  # the one call
    yield
    unregister_method("gated")


@pytest.mark.slow
def test_a_method_defined_in_a_test_file_trains_resumes_evaluates_predicts_serves_and_exports(gated, tmp_path) -> None:
    import json
    import shutil

    import yaml
    from fastapi.testclient import TestClient
    from safetensors.torch import load_file
    from typer.testing import CliRunner

    from adept_cli.cli import app
    from adept_cli.prompt.adapter_files import ADAPTER_WEIGHTS
    from adept_cli.run_dir import RunDir
    from adept_cli.serving.app import create_app

    runner = CliRunner()
    listed = runner.invoke(app, ["train", "--list-settings"])
    assert "gate_bias" in listed.output and "gated: the gates' starting bias" in listed.output
    run = tmp_path / "run"
    settings = ["method=gated", "gate_bias=0.5", *SHORT_RUN, "scoring=rank"]
    trained = runner.invoke(
        app, ["train", "--recipe", str(SMOKE), "-m", model_path(STORIES), "-o", str(run), *settings]
    )
    assert trained.exit_code == 0, trained.output
    recorded = yaml.safe_load((run / "config.yaml").read_text())
    assert recorded["method"] == "gated" and recorded["gate_bias"] == 0.5
    weights = load_file(str(run / "best" / ADAPTER_WEIGHTS))
    assert float(weights["gate.bias"]) != 0.5  # started at its setting, then trained
    refused = runner.invoke(
        app, ["train", "--recipe", str(SMOKE), "-o", str(tmp_path / "x"), "method=pt", "gate_bias=1"]
    )
    assert refused.exit_code != 0 and "gate_bias applies to method gated, not pt" in refused.output

    # cut back to its step-2 checkpoint, it resumes to the very same adapter
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    (copy / "results.json").unlink()
    shutil.rmtree(RunDir(copy).checkpoint(4))
    resumed = runner.invoke(app, ["train", "-o", str(copy), "--resume", "auto"])
    assert resumed.exit_code == 0 and "step_00000002" in resumed.output, resumed.output
    again = load_file(str(copy / "best" / ADAPTER_WEIGHTS))
    assert weights.keys() == again.keys() and all(torch.equal(weights[k], again[k]) for k in weights)

    evaluated = runner.invoke(app, ["eval", "--run", str(run), "--split", "test", "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    results = json.loads((run / "results.json").read_text())
    assert json.loads(evaluated.stdout)["metrics"] == results["test"]

    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"premise": "A cat sat.", "hypothesis": "A cat sat."}\n')
    predicted = runner.invoke(app, ["predict", "--run", str(run), "--input", str(rows), "-o", "-"])
    assert predicted.exit_code == 0, predicted.output
    label = json.loads(predicted.stdout.strip().splitlines()[-1])["label"]

    base, tokenizer = MODEL_FACTORIES["llama"]()
    engine = Engine(base.eval(), tokenizer, model_path(STORIES))
    engine.add("gated", run)
    with TestClient(create_app(engine)) as http:
        answer = http.post("/v1/predict", json={"model": "gated", "inputs": json.loads(rows.read_text())})
    assert answer.status_code == 200 and answer.json()["predictions"][0]["label"] == label, answer.text

    exported = runner.invoke(app, ["export", "--run", str(run), "--format", "adept", "-o", str(tmp_path / "out")])
    assert exported.exit_code == 0, exported.output
    assert load_adapter(tmp_path / "out").config.gate_bias == 0.5
    merged = runner.invoke(app, ["export", "--run", str(run), "--format", "merged", "-o", str(tmp_path / "m")])
    assert merged.exit_code != 0 and "gated" in merged.output
