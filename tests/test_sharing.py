"""The shared prompt (causal models): the prompt's keys and values computed once and shared by every row
and call compute the same model as running the prompt in every row: logits, every gradient, training
curves and generated tokens. Models: the real stories260K Llama, tiny RANDOM GPT-2 and Qwen2 (configs)."""

from __future__ import annotations

import copy

import pytest
import torch

from adept_cli import ConfigError, PromptTunedModel

from .helpers import INPUTS, METHODS, MODEL_FACTORIES, TARGETS, perturb, small_config, tiny_qwen2

FACTORIES = {"llama": MODEL_FACTORIES["llama"], "gpt2": MODEL_FACTORIES["gpt2"], "qwen2": tiny_qwen2}


def pair(method: str, model_name: str, prompt_len: int):
    """The same adapter twice: prompt run per row (off) and shared (on)."""
    base, tokenizer = FACTORIES[model_name]()
    torch.manual_seed(1)
    overrides = {"prompt_len": prompt_len, **({"max_length": 64} if method == "dept" else {})}
    config = small_config(method, **overrides)
    unshared = PromptTunedModel(copy.deepcopy(base), config, tokenizer=tokenizer, share_prompt="off")
    perturb(unshared)
    shared = PromptTunedModel(base, config, tokenizer=tokenizer, share_prompt="on")
    shared.adapter.load_state_dict(unshared.adapter.state_dict())
    assert shared.shares_prompt and not unshared.shares_prompt
    return unshared, shared, tokenizer


def labelled_batch(tokenizer, side: str, texts=INPUTS, targets=TARGETS) -> dict[str, torch.Tensor]:
    """Rows of very different lengths, padded on `side`; labels on the targets only."""
    sources = [tokenizer(text)["input_ids"] for text in texts]
    answers = [tokenizer(" " + text, add_special_tokens=False)["input_ids"] for text in targets]
    rows = [s + a for s, a in zip(sources, answers)]
    labels = [[-100] * len(s) + a for s, a in zip(sources, answers)]
    width = max(map(len, rows))

    def pad(row, value):
        filler = [value] * (width - len(row))
        return row + filler if side == "right" else filler + row

    return {
        "input_ids": torch.tensor([pad(r, tokenizer.pad_token_id) for r in rows]),
        "attention_mask": torch.tensor([pad([1] * len(r), 0) for r in rows]),
        "labels": torch.tensor([pad(lab, -100) for lab in labels]),
    }


def count_prompt_passes(monkeypatch) -> list[int]:
    """A list that gets an item for every prompt pass (batch 1) the shared path runs."""
    from adept_cli.prompt import sharing

    passes: list[int] = []
    original = sharing._prompt_pass

    def counted(*args):
        passes.append(1)
        return original(*args)

    monkeypatch.setattr(sharing, "_prompt_pass", counted)
    return passes


def logits_and_grads(model, batch):
    model.zero_grad(set_to_none=True)
    output = model(**batch)
    output.loss.backward()
    return (
        output.logits.detach(),
        output.loss.detach(),
        {n: p.grad.clone() for n, p in model.adapter.named_parameters()},
    )


@pytest.mark.parametrize("prompt_len", [1, 100])
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("model_name", list(FACTORIES))
def test_shared_prompt_gives_the_same_logits_and_gradients(model_name, method, side, prompt_len, monkeypatch) -> None:
    unshared, shared, tokenizer = pair(method, model_name, prompt_len)
    batch = labelled_batch(tokenizer, side)
    passes = count_prompt_passes(monkeypatch)
    logits_a, loss_a, grads_a = logits_and_grads(unshared, batch)
    assert passes == []
    logits_b, loss_b, grads_b = logits_and_grads(shared, batch)
    assert passes == [1]  # one prompt pass for the whole batch
    real = batch["attention_mask"].bool()
    scale = float(logits_a[real].abs().max())
    assert float((logits_a[real] - logits_b[real]).abs().max()) <= 1e-5 * max(scale, 1.0)
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-5, atol=1e-6)
    for name, grad in grads_a.items():
        difference = float((grad - grads_b[name]).abs().max())
        assert difference <= 1e-5 * float(grad.abs().max()) + 1e-12, (name, difference)


@pytest.mark.parametrize("model_name", ["llama", "gpt2"])
def test_generation_with_the_shared_prompt_is_token_for_token_the_same(model_name, monkeypatch) -> None:
    unshared, shared, tokenizer = pair("adept", model_name, 4)
    unshared.eval(), shared.eval()
    tokenizer.padding_side = "left"
    batch = dict(tokenizer(INPUTS, return_tensors="pt", padding=True))
    settings = [
        {"do_sample": False},
        {"do_sample": False, "use_cache": False},  # falls back to the unshared path
        {"do_sample": False, "num_beams": 3},
        {"do_sample": True, "top_k": 5},
        {"do_sample": True, "top_k": 5, "num_return_sequences": 2},
    ]
    passes = count_prompt_passes(monkeypatch)
    for options in settings:
        outputs = []
        for model in (unshared, shared):
            torch.manual_seed(0)
            outputs.append(model.generate(**batch, max_new_tokens=6, eos_token_id=None, **options))
        assert torch.equal(outputs[0], outputs[1]), options
    assert passes == [1]  # the prompt ran once for all these calls (the adapter did not change)
    for row in range(len(INPUTS)):  # one row at a time equals the same row in the batch
        ids = tokenizer(INPUTS[row], return_tensors="pt")["input_ids"]
        alone = shared.generate(ids, max_new_tokens=6, do_sample=False, eos_token_id=None)
        batched = shared.generate(**batch, max_new_tokens=6, do_sample=False, eos_token_id=None)[row]
        assert torch.equal(alone[0, -6:], batched[-6:])


def test_the_inference_cache_is_reused_and_invalidated_when_the_adapter_changes() -> None:
    _, model, tokenizer = pair("adept", "llama", 4)
    model.eval()
    ids = tokenizer(INPUTS[:1], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        first = model(ids).logits
        cached = model.prompt_cache.cached_layers("default")
        assert model(ids).logits.equal(first) and model.prompt_cache.cached_layers("default") is cached  # reused
        optimizer = torch.optim.SGD(model.adapter.parameters(), lr=0.5)
    loss = model(**labelled_batch(tokenizer, "left")).loss  # with gradients: never the stored cache
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        after = model(ids).logits
    assert model.prompt_cache.cached_layers("default") is not cached
    fresh = copy.deepcopy(model)
    fresh.prompt_cache.clear()
    with torch.no_grad():
        torch.testing.assert_close(after, fresh(ids).logits)  # a stale cache would give `first`'s prompt
    assert not torch.allclose(after, first)
    with torch.no_grad():
        model.adapter.prompt.mul_(0.5)  # any in-place write counts
        assert not torch.equal(model(ids).logits, after)


def test_share_prompt_on_where_it_cannot_share_is_a_clear_error() -> None:
    base, tokenizer = MODEL_FACTORIES["t5"]()
    with pytest.raises(ConfigError, match="share_prompt=on, but this model cannot share the prompt: a seq2seq"):
        PromptTunedModel(base, small_config("adept"), tokenizer=tokenizer, share_prompt="on")
    auto = PromptTunedModel(base, small_config("adept"), tokenizer=tokenizer)
    assert not auto.shares_prompt and "seq2seq" in auto.not_shared_because


def test_a_sliding_window_model_falls_back() -> None:
    from transformers import MistralConfig, MistralForCausalLM

    config = MistralConfig(
        vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=2, sliding_window=8,
    )  # fmt: skip
    model = PromptTunedModel(MistralForCausalLM(config).eval(), small_config("pt"))
    assert not model.shares_prompt and "sliding_attention" in model.not_shared_because


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.slow
def test_training_runs_give_the_same_curve_shared_or_not(tmp_path, method) -> None:
    from adept_cli.training import train

    from .helpers import read_jsonl, stories_config

    common = ("steps=6", "eval_every=3", "log_every=1", "scoring=rank", f"method={method}")
    curves = {}
    for share in ("on", "off"):
        results = train(stories_config(tmp_path, *common, f"share_prompt={share}", name=share))
        records = read_jsonl(tmp_path / share / "metrics.jsonl")
        curves[share] = ([r["loss"] for r in records if r["kind"] == "train"], results["test"])
    assert curves["on"][0] == pytest.approx(curves["off"][0], rel=1e-5, abs=1e-6)
    assert curves["on"][1] == curves["off"][1]


def test_share_prompt_setting_is_checked_before_loading() -> None:
    from adept_cli.training import TrainConfigError, build_config

    with pytest.raises(TrainConfigError, match="share_prompt must be one of auto, on, off"):
        build_config(None, {}, ["share_prompt=maybe"])
    with pytest.raises(TrainConfigError, match="share_prompt applies to method adept / dept / pt, not lora"):
        build_config(None, {}, ["method=lora", "share_prompt=on"])
