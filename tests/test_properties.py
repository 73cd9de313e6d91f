"""The core maths as properties over random batches (Hypothesis): random models (the real stories260K
Llama, tiny RANDOM GPT-2 and T5), random adapters of every method and prompt length mixed in one batch,
random token rows and padding sides. For each: a mixed batch gives each row what it gets alone; cached
generation gives what uncached does; the shared prompt gives what running it in every row does; an
ADePT offset depends on the token, never on where it stands."""

from __future__ import annotations

import functools

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adept_cli import MixedAdapterModel, PromptTunedModel

from .helpers import METHODS, MODEL_FACTORIES, perturb, small_config

FAMILIES = ("llama", "gpt2", "t5")
CAUSAL = ("llama", "gpt2")
PROMPT_LENGTHS = (1, 3, 6)
EXAMPLES = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def adapter_name(method: str, length: int) -> str:
    return f"{method}-{length}"


@functools.cache
def adapters(family: str) -> dict[str, PromptTunedModel]:
    """One trained-looking adapter of every method and prompt length, each on a base of its own."""
    out = {}
    for method in METHODS:
        for length in PROMPT_LENGTHS:
            base, tokenizer = MODEL_FACTORIES[family]()
            extra = {"max_length": 64} if method == "dept" else {}
            model = PromptTunedModel(base, small_config(method, prompt_len=length, **extra), tokenizer=tokenizer)
            perturb(model, seed=length)
            out[adapter_name(method, length)] = model.eval()
    return out


@functools.cache
def mixed(family: str, share_prompt: str = "auto") -> MixedAdapterModel:
    base, _ = MODEL_FACTORIES[family]()
    model = MixedAdapterModel(base.eval(), share_prompt=share_prompt)
    for name, adapter in adapters(family).items():
        model.add_adapter(name, adapter)
    return model


@functools.cache
def pad_id(family: str) -> int:
    return MODEL_FACTORIES[family]()[1].pad_token_id


@st.composite
def batches(draw, families=FAMILIES):
    """(family, rows of token ids, the adapter of each row or None for the base, padding side)."""
    family = draw(st.sampled_from(families))
    names = [None, *(adapter_name(m, n) for m in METHODS for n in PROMPT_LENGTHS)]
    count = draw(st.integers(1, 4))
    rows = [draw(st.lists(st.integers(3, 500), min_size=1, max_size=12)) for _ in range(count)]
    chosen = [draw(st.sampled_from(names)) for _ in range(count)]
    side = "right" if family == "t5" else draw(st.sampled_from(["left", "right"]))
    return family, rows, chosen, side


def padded(rows: list[list[int]], side: str, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids, mask = [], []
    for row in rows:
        filler = width - len(row)
        ids.append(row + [pad] * filler if side == "right" else [pad] * filler + row)
        mask.append([1] * len(row) + [0] * filler if side == "right" else [0] * filler + [1] * len(row))
    return torch.tensor(ids), torch.tensor(mask)


def logits_of(model: MixedAdapterModel, rows, names, side: str, family: str) -> list[torch.Tensor]:
    """Each row's logits over its own tokens (seq2seq: over a fixed decoder input)."""
    ids, mask = padded(rows, side, pad_id(family))
    extra = {"decoder_input_ids": torch.tensor([[0, 5, 9]] * len(rows))} if family == "t5" else {}
    with torch.no_grad():
        logits = model(ids, names, mask, **extra).logits
    return [logits[i] if family == "t5" else logits[i][mask[i].bool()] for i in range(len(rows))]


@EXAMPLES
@given(batches())
def test_a_mixed_batch_gives_each_row_what_it_gets_alone(batch) -> None:
    family, rows, names, side = batch
    model = mixed(family)
    together = logits_of(model, rows, names, side, family)
    for row, name, got in zip(rows, names, together):
        alone = logits_of(model, [row], [name], side, family)[0]
        torch.testing.assert_close(got, alone, atol=1e-4, rtol=1e-4)


@EXAMPLES
@given(batches(CAUSAL))
def test_cached_generation_gives_the_tokens_uncached_generation_does(batch) -> None:
    family, rows, names, side = batch
    ids, mask = padded(rows, "left", pad_id(family))
    options = {"max_new_tokens": 4, "do_sample": False, "pad_token_id": pad_id(family), "eos_token_id": None}
    model = mixed(family)
    cached = model.generate(ids, names, mask, use_cache=True, **options)
    uncached = model.generate(ids, names, mask, use_cache=False, **options)
    assert torch.equal(cached, uncached)


@EXAMPLES
@given(batches(CAUSAL))
def test_the_shared_prompt_gives_what_running_it_in_every_row_does(batch) -> None:
    family, rows, names, side = batch
    shared = logits_of(mixed(family, "on"), rows, names, side, family)
    unshared = logits_of(mixed(family, "off"), rows, names, side, family)
    for got, want in zip(shared, unshared):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


@EXAMPLES
@given(
    family=st.sampled_from(FAMILIES),
    length=st.sampled_from(PROMPT_LENGTHS),
    ids=st.lists(st.integers(3, 500), min_size=2, max_size=16),
    shift=st.integers(1, 40),
)
def test_an_adept_offset_depends_on_the_token_not_its_position(family, length, ids, shift) -> None:
    model = adapters(family)[adapter_name("adept", length)]
    adapter, tokens = model.adapter, torch.tensor([ids])
    with torch.no_grad():
        embeds = model.adapted_embedding.embedding(tokens)  # the base's own embedding of each token
    here = torch.arange(len(ids)).unsqueeze(0)
    with torch.no_grad():
        at_start = adapter.method.offsets(adapter, tokens, embeds, here)
        shifted = adapter.method.offsets(adapter, tokens, embeds, here + shift)
        reversed_order = adapter.method.offsets(adapter, tokens.flip(1), embeds.flip(1), here).flip(1)
    torch.testing.assert_close(at_start, shifted)
    torch.testing.assert_close(at_start, reversed_order)
    for i, token in enumerate(ids):  # a token's offset is the same wherever it stands
        torch.testing.assert_close(at_start[0, i], at_start[0, ids.index(token)])
