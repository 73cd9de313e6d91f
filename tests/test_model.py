"""The method x model matrix: forward, training lowers the loss, generate, cached == uncached.

Models: tiny RANDOM T5, BART and GPT-2 built from configs (no pretrained weights offline) and the real
pretrained stories260K Llama.
"""

from __future__ import annotations

import pytest
import torch

from adept_cli import AdeptConfig, PromptTunedModel, PromptTuningConfig
from adept_cli.analysis import applied_offsets

from .helpers import (
    INPUTS,
    METHODS,
    MODEL_FACTORIES,
    MODELS,
    generation_batch,
    perturb,
    small_config,
    train_steps,
    training_batch,
    wrap,
)


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("method", METHODS)
def test_forward_train_generate(method: str, model_name: str) -> None:
    model, tokenizer = wrap(method, model_name)
    batch = training_batch(model, tokenizer)

    output = model(**batch)
    assert torch.isfinite(output.loss)
    if not model.is_seq2seq:  # causal logits are aligned with the input, prompt slots removed
        assert output.logits.shape[:2] == batch["input_ids"].shape

    losses = train_steps(model, batch, steps=20, lr=0.1)
    assert losses[-1] < 0.95 * losses[0], losses

    model.eval()
    inputs = generation_batch(model, tokenizer)
    cached = model.generate(**inputs, max_new_tokens=6, do_sample=False, use_cache=True)
    uncached = model.generate(**inputs, max_new_tokens=6, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)
    if model.is_seq2seq:
        assert cached.shape[0] == len(INPUTS)
    else:  # returned rows start with the caller's input ids, then at least one new token
        assert torch.equal(cached[:, : inputs["input_ids"].shape[1]], inputs["input_ids"])
        assert cached.shape[1] > inputs["input_ids"].shape[1]
        assert int(cached.max()) < model.vocab_size  # no prompt slots leak into the output


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("method", METHODS)
def test_only_adapter_trains_and_count_matches_budget_formula(method: str, model_name: str) -> None:
    model, tokenizer = wrap(method, model_name)
    batch = training_batch(model, tokenizer)
    train_steps(model, batch, steps=1)  # after one step W_up / B are non-zero, so every tensor gets gradient
    model.zero_grad(set_to_none=True)
    model(**batch).loss.backward()

    adapter_ids = {id(p) for p in model.adapter.parameters()}
    for name, parameter in model.named_parameters():
        if id(parameter) in adapter_ids:
            assert parameter.requires_grad, name
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
        else:
            assert not parameter.requires_grad and parameter.grad is None, name

    d, config = model.dim, model.config
    expected = {  # the papers' counts: l d; l d + s r + r d; l d + 2 d r + r + d
        "pt": lambda: config.prompt_len * d,
        "dept": lambda: config.prompt_len * d + config.max_length * config.rank + config.rank * d,
        "adept": lambda: config.prompt_len * d + 2 * d * config.bottleneck + config.bottleneck + d,
    }[method]()
    assert model.num_trainable_params() == expected


@pytest.mark.parametrize("model_name", ["t5", "llama"])
def test_sizes_left_unset_are_solved_from_the_budget(model_name: str) -> None:
    base, tokenizer = MODEL_FACTORIES[model_name]()
    d = base.get_input_embeddings().weight.shape[1]
    model = PromptTunedModel(base, AdeptConfig(prompt_len=60), tokenizer=tokenizer)
    assert model.config.bottleneck == (100 * d - 60 * d - d) // (2 * d + 1)
    assert model.num_trainable_params() <= 100 * d


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("method", ["dept", "adept"])
def test_offsets_are_exactly_zero_at_init(method: str, model_name: str) -> None:
    model, tokenizer = wrap(method, model_name)
    ids = generation_batch(model, tokenizer)["input_ids"]
    embeds = model.adapted_embedding.embedding(ids)
    positions = torch.arange(ids.shape[1]).expand_as(ids)
    offsets = model.adapter.offsets(ids, embeds, positions)
    assert torch.count_nonzero(offsets) == 0
    base_embeds = model.adapted_embedding.embedding(ids)
    assert torch.equal(model.adapted_embedding(ids), base_embeds)


@pytest.mark.parametrize("model_name", ["t5", "llama"])
def test_adept_offsets_do_not_move_when_tokens_are_prepended(model_name: str) -> None:
    model, tokenizer = wrap("adept", model_name)
    perturb(model)
    ids = tokenizer("Lily saw a big red ball", return_tensors="pt")["input_ids"]
    prefix = tokenizer("Once upon a time there was a cat.", return_tensors="pt", add_special_tokens=False)["input_ids"]
    shifted = torch.cat([prefix, ids], dim=1)
    alone = applied_offsets(model, ids)
    after_prefix = applied_offsets(model, shifted)[:, prefix.shape[1] :]
    assert torch.count_nonzero(alone) > 0
    assert torch.equal(alone, after_prefix)
    # and the offset of a token is f(e) = ReLU(e W_down + b1) W_up + b2 of its own embedding
    f, embeds = model.adapter.token_offsets, model.adapted_embedding.embedding(ids)
    torch.testing.assert_close(alone, torch.relu(embeds @ f.down + f.down_bias) @ f.up + f.up_bias)


@pytest.mark.parametrize("model_name", ["t5", "llama"])
def test_dept_offsets_move_when_tokens_are_prepended(model_name: str) -> None:
    model, tokenizer = wrap("dept", model_name)
    perturb(model)
    ids = tokenizer("Lily saw a big red ball", return_tensors="pt")["input_ids"]
    prefix = tokenizer("Once upon a time", return_tensors="pt", add_special_tokens=False)["input_ids"]
    alone = applied_offsets(model, ids)
    after_prefix = applied_offsets(model, torch.cat([prefix, ids], dim=1))[:, prefix.shape[1] :]
    assert not torch.allclose(alone, after_prefix)
    # and the offset of position i is row i of A B
    expected = (model.adapter.position_offsets.a @ model.adapter.position_offsets.b)[: ids.shape[1]]
    torch.testing.assert_close(alone[0], expected)


def _manual_embeds(model: PromptTunedModel, ids: torch.Tensor) -> torch.Tensor:
    """The method's definition, written out: [P, E + offsets] for one unpadded row."""
    adapter = model.adapter
    embeds = model.adapted_embedding.embedding(ids)
    if hasattr(adapter, "token_offsets"):
        f = adapter.token_offsets
        embeds = embeds + torch.relu(embeds @ f.down + f.down_bias) @ f.up + f.up_bias
    if hasattr(adapter, "position_offsets"):
        p = adapter.position_offsets
        embeds = embeds + (p.a @ p.b)[: ids.shape[1]]
    return torch.cat([adapter.prompt.unsqueeze(0), embeds], dim=1)


@pytest.mark.parametrize("model_name", MODELS)
@pytest.mark.parametrize("method", METHODS)
def test_forward_matches_the_method_definition_and_ignores_padding(method: str, model_name: str) -> None:
    model, tokenizer = wrap(method, model_name)
    perturb(model)
    model.eval()
    tokenizer.padding_side = "right" if model.is_seq2seq else "left"
    padded = tokenizer(INPUTS, return_tensors="pt", padding=True)
    decoder = {"decoder_input_ids": torch.tensor([[0, 5, 9]])} if model.is_seq2seq else {}
    with torch.no_grad():
        for row, text in enumerate(INPUTS):
            ids = tokenizer(text, return_tensors="pt")["input_ids"]
            reference = model.base(inputs_embeds=_manual_embeds(model, ids), **decoder).logits
            if not model.is_seq2seq:
                reference = reference[:, model.prompt_len :]
            ours = model(ids, **decoder).logits
            torch.testing.assert_close(ours, reference, atol=1e-4, rtol=1e-4)
            # the same row inside a padded batch gives the same logits
            row_decoder = {k: v.expand(len(INPUTS), -1) for k, v in decoder.items()}
            batch_logits = model(padded["input_ids"], padded["attention_mask"], **row_decoder).logits[row]
            if not model.is_seq2seq:
                real = padded["attention_mask"][row].bool()
                batch_logits = batch_logits[real]
            torch.testing.assert_close(batch_logits, ours[0], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("method", ["dept", "adept"])
@pytest.mark.parametrize("model_name", ["gpt2", "llama"])
def test_causal_generation_applies_offsets_to_generated_tokens(method: str, model_name: str) -> None:
    """Greedy generation equals a loop that re-embeds the whole sequence (offsets on every token)."""
    model, tokenizer = wrap(method, model_name)
    perturb(model)
    model.eval()
    ids = tokenizer("Lily saw a big", return_tensors="pt")["input_ids"]
    expected = ids
    with torch.no_grad():
        for _ in range(8):
            logits = model.base(inputs_embeds=_manual_embeds(model, expected)).logits
            expected = torch.cat([expected, logits[:, -1:].argmax(-1)], dim=1)
    generated = model.generate(ids, max_new_tokens=8, do_sample=False, eos_token_id=None)
    assert torch.equal(generated, expected)
    # without the offsets on generated tokens the continuation differs (the reference code's bug)
    embeds = model.adapted_embedding.embedding(expected)
    assert model.adapter.offsets(expected, embeds, torch.arange(12)[None]).abs().sum() > 0


def test_beam_search_and_sampling_run_with_the_prompt() -> None:
    model, tokenizer = wrap("adept", "llama")
    perturb(model)
    inputs = generation_batch(model, tokenizer)
    beams = model.generate(**inputs, max_new_tokens=4, num_beams=3, do_sample=False, use_cache=True)
    uncached = model.generate(**inputs, max_new_tokens=4, num_beams=3, do_sample=False, use_cache=False)
    assert torch.equal(beams, uncached)
    assert torch.equal(beams[:, : inputs["input_ids"].shape[1]], inputs["input_ids"])
    samples = []
    for _ in range(2):
        torch.manual_seed(0)
        samples.append(model.generate(**inputs, max_new_tokens=4, do_sample=True, top_k=5, eos_token_id=None))
    assert torch.equal(samples[0], samples[1])  # the prompt adds no randomness of its own
    assert samples[0].shape[1] == inputs["input_ids"].shape[1] + 4
    assert int(samples[0].max()) < model.vocab_size


def test_unwrap_restores_the_base_model() -> None:
    model, tokenizer = wrap("dept", "llama")
    ids = tokenizer("Lily", return_tensors="pt")["input_ids"]
    fresh, _ = MODEL_FACTORIES["llama"]()
    base = model.unwrap()
    with torch.no_grad():
        torch.testing.assert_close(base(ids).logits, fresh(ids).logits)
    assert not base._forward_pre_hooks


def test_wrapping_twice_is_refused() -> None:
    model, tokenizer = wrap("pt", "llama")
    with pytest.raises(ValueError, match="already carries"):
        PromptTunedModel(model.base, small_config("pt"))


def test_text_init_uses_the_text_embeddings() -> None:
    base, tokenizer = MODEL_FACTORIES["llama"]()
    config = PromptTuningConfig(prompt_len=5, prompt_init="text", prompt_init_text="Once upon")
    model = PromptTunedModel(base, config, tokenizer=tokenizer)
    ids = tokenizer("Once upon", add_special_tokens=False)["input_ids"]
    ids = (ids * 5)[:5]
    expected = model.adapted_embedding.embedding(torch.tensor(ids))
    torch.testing.assert_close(model.adapter.prompt.detach(), expected)
