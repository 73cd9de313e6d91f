"""gradient_checkpointing: the same loss and gradients (1e-5) as without it, for PT, DePT and ADePT on a
causal model (the real stories260K) and a seq2seq one (a tiny RANDOM T5), and less activation memory on
stories260K: the bytes autograd keeps for the backward pass, counted exactly."""

from __future__ import annotations

import pytest
import torch

from adept_cli.hf import ModelError, enable_gradient_checkpointing

from .helpers import METHODS, perturb, stories_config, training_batch, wrap


def loss_grads_and_saved_bytes(method: str, model_name: str, checkpointing: bool):
    model, tokenizer = wrap(method, model_name)
    perturb(model)
    if checkpointing:
        enable_gradient_checkpointing(model.base)
    model.train()
    batch = training_batch(model, tokenizer)
    saved = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved.append(tensor.numel() * tensor.element_size())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = model(**batch).loss
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.adapter.named_parameters()}
    return loss.item(), grads, sum(saved)


@pytest.mark.parametrize("model_name", ["llama", "t5"])
@pytest.mark.parametrize("method", METHODS)
def test_checkpointing_gives_the_same_loss_and_gradients_with_less_saved(method, model_name) -> None:
    loss, grads, saved = loss_grads_and_saved_bytes(method, model_name, checkpointing=False)
    loss_ckpt, grads_ckpt, saved_ckpt = loss_grads_and_saved_bytes(method, model_name, checkpointing=True)
    assert loss_ckpt == pytest.approx(loss, abs=1e-5)
    assert grads.keys() == grads_ckpt.keys()
    for name in grads:
        assert grads[name].abs().sum() > 0, name  # the gradient does reach the prompt and the offsets
        torch.testing.assert_close(grads_ckpt[name], grads[name], atol=1e-5, rtol=1e-4)
    if model_name == "llama":  # the tiny T5's saved bytes are its 32k-wide logits, not its layers
        assert saved_ckpt < 0.6 * saved, (saved_ckpt, saved)


@pytest.mark.slow
def test_a_checkpointed_run_trains_like_an_ordinary_one(tmp_path) -> None:
    import json

    from adept_cli.training import train

    train(stories_config(tmp_path, "steps=3", "eval_every=3", name="plain"))
    train(stories_config(tmp_path, "steps=3", "eval_every=3", "gradient_checkpointing=true", name="ckpt"))
    lines = {
        name: [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        for name in ("plain", "ckpt")
    }
    losses = {name: [r["loss"] for r in records if r["kind"] == "train"] for name, records in lines.items()}
    assert losses["ckpt"] == pytest.approx(losses["plain"], abs=1e-4)


def test_a_model_without_checkpointing_support_is_one_error() -> None:
    module = torch.nn.Linear(2, 2)
    with pytest.raises(ModelError, match="does not support gradient checkpointing"):
        enable_gradient_checkpointing(module)
