"""PEFT's PROMPT_TUNING adapters, as PEFT writes them, read as what they are: a PT adapter. They join a
mixed batch beside adept's own adapters (each row as PEFT's own model generates it), are served by the
built-in engine, and start a DePT / ADePT run (`init_from`); other PEFT types, and a prompt made for
another base, are refused by name. Model: the real stories260K Llama."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from adept_cli import save_adapter
from adept_cli.prompt.adapter_files import AdapterError
from adept_cli.prompt.model import MixedAdapterModel
from adept_cli.serving.engine import Engine
from adept_cli.serving.protocol import GenerationRow, Sampling
from adept_cli.training.setup import setup_data, setup_model

from .helpers import INPUTS, STORIES, model_path, perturb, stories, stories_config, wrap

GREEDY = {"max_new_tokens": 6, "do_sample": False}


def peft_prompt(folder: Path, tokens: int = 5, seed: int = 3):
    """A PEFT prompt-tuning adapter on stories260K, written by PEFT itself, its prompt made non-trivial."""
    from peft import PromptTuningConfig, TaskType, get_peft_model

    base, _ = stories()
    model = get_peft_model(base, PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=tokens))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        weight = model.prompt_encoder["default"].embedding.weight
        weight.add_(torch.randn(weight.shape, generator=generator) * 0.5)
    model.save_pretrained(folder)
    return model.eval()


def peft_alone(model, tokenizer, text: str) -> list[int]:
    """PEFT's own greedy tokens for one unpadded row (without its KV cache: see
    helpers.peft_cached_generation_is_right)."""
    ids = tokenizer(text, return_tensors="pt")
    out = model.generate(**ids, **GREEDY, use_cache=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=None)
    return out[0, -GREEDY["max_new_tokens"] :].tolist()


def test_a_peft_prompt_joins_a_mixed_batch_and_each_row_is_what_peft_generates(tmp_path) -> None:
    peft_model = peft_prompt(tmp_path / "peft")
    adept, tokenizer = wrap("adept", "llama", prompt_len=3)
    perturb(adept)
    save_adapter(adept, tmp_path / "adept")
    base, _ = stories()
    mixed = MixedAdapterModel(base.eval(), model_path(STORIES))
    mixed.add_adapter("peft", tmp_path / "peft")
    mixed.add_adapter("adept", tmp_path / "adept")
    assert mixed.adapted_embedding.adapters["peft"].config.method == "pt"
    names = ["peft", "adept", None, "peft"]
    texts = [INPUTS[0], INPUTS[1], INPUTS[2], INPUTS[2]]
    tokenizer.padding_side = "left"
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    together = mixed.generate(batch["input_ids"], names, batch["attention_mask"], **GREEDY, eos_token_id=None)
    for row, (name, text) in enumerate(zip(names, texts)):
        if name == "peft":
            assert together[row, -6:].tolist() == peft_alone(peft_model, tokenizer, text), row
    ids = tokenizer(INPUTS[1], return_tensors="pt")["input_ids"]
    alone = adept.eval().generate(ids, **GREEDY, eos_token_id=None)[0, -6:]
    assert together[1, -6:].tolist() == alone.tolist()


def test_the_built_in_engine_serves_a_peft_prompt_as_peft_answers(tmp_path) -> None:
    peft_model = peft_prompt(tmp_path / "peft")
    base, tokenizer = stories()
    engine = Engine(base.eval(), tokenizer, model_path(STORIES))
    engine.add("peft", tmp_path / "peft")
    ids = engine.prompt_ids("peft", INPUTS[0], 6)
    answer = engine.generate([GenerationRow("peft", ids, 6)], Sampling())[0]
    expected = peft_alone(peft_model, tokenizer, INPUTS[0])
    end = expected.index(tokenizer.eos_token_id) if tokenizer.eos_token_id in expected else len(expected)
    assert answer.text == tokenizer.decode(expected[:end], skip_special_tokens=True)
    assert engine.get("peft").describe()["method"] == "pt"


@pytest.mark.parametrize("method", ["pt", "adept", "dept"])
def test_a_peft_prompt_starts_a_run_of_any_prompt_method(tmp_path, method) -> None:
    peft_model = peft_prompt(tmp_path / "peft", tokens=4)
    settings = [f"method={method}", "prompt_len=4", f"init_from={tmp_path / 'peft'}"]
    config = stories_config(tmp_path, *settings)
    parts, config = setup_data(config)
    model = setup_model(config, parts).model
    expected = peft_model.prompt_encoder["default"].embedding.weight
    assert torch.equal(model.adapter.prompt.detach(), expected.detach())


def test_other_peft_types_and_a_prompt_of_another_base_are_refused_by_name(tmp_path) -> None:
    from peft import LoraConfig, get_peft_model

    base, _ = stories()
    get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(tmp_path / "lora")
    mixed = MixedAdapterModel(stories()[0].eval(), model_path(STORIES))
    with pytest.raises(AdapterError, match="is a PEFT LORA adapter; adept reads PEFT's PROMPT_TUNING adapters"):
        mixed.add_adapter("lora", tmp_path / "lora")
    peft_prompt(tmp_path / "other")
    config_path = tmp_path / "other" / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = "someone/another-model"
    config_path.write_text(json.dumps(config))
    with pytest.raises(AdapterError, match="is a PEFT prompt for someone/another-model; the model here is"):
        mixed.add_adapter("other", tmp_path / "other")


def test_a_peft_prompt_exports_for_vllm_as_its_own_prompt(tmp_path) -> None:
    """`adept export --adapter PEFT_FOLDER --format vllm`: the prompt rows PEFT trained, checked on export."""
    from safetensors.torch import load_file
    from typer.testing import CliRunner

    from adept_cli.cli import app

    peft_model = peft_prompt(tmp_path / "peft", tokens=4)
    config = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = model_path(STORIES)  # where PEFT recorded it, as a hub adapter names its base
    (tmp_path / "peft" / "adapter_config.json").write_text(json.dumps(config))
    result = CliRunner().invoke(
        app, ["export", "--adapter", str(tmp_path / "peft"), "--format", "vllm", "-o", str(tmp_path / "out"), "--json"]
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "adept_vllm.json").read_text())
    assert manifest["method"] == "pt" and manifest["lora"] is None and manifest["prompt_len"] == 4
    prompt = load_file(str(tmp_path / "out" / "prompt.safetensors"))["prompt"]
    torch.testing.assert_close(prompt, peft_model.prompt_encoder["default"].embedding.weight.detach())
    both = CliRunner().invoke(app, ["export", "--adapter", str(tmp_path / "peft"), "--run", str(tmp_path), "-o", "x"])
    assert both.exit_code != 0 and "one of them" in both.output
