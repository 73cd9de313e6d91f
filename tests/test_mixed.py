"""Mixed-adapter batches: rows of different adapters (PT, DePT, ADePT; prompts of different lengths) in
one forward pass or one `generate` give exactly what each adapter gives alone, causal and seq2seq.
Models: tiny RANDOM T5 and GPT-2 (configs) and the real stories260K Llama."""

from __future__ import annotations

import pytest
import torch

from adept_cli import save_adapter
from adept_cli.errors import AdeptError
from adept_cli.prompt.model import AdapterNotFound, MixedAdapterModel

from .helpers import INPUTS, MODEL_FACTORIES, perturb, wrap

ADAPTERS = {"pt": dict(prompt_len=6), "dept": dict(prompt_len=4), "adept": dict(prompt_len=2)}


def singles(model_name: str) -> dict[str, object]:
    models = {}
    for method, overrides in ADAPTERS.items():
        model, tokenizer = wrap(method, model_name, **overrides)
        perturb(model)
        models[method] = model.eval()
    return models, tokenizer


def mixed_model(model_name: str, models: dict) -> MixedAdapterModel:
    base, _ = MODEL_FACTORIES[model_name]()
    mixed = MixedAdapterModel(base.eval())
    for name, model in models.items():
        mixed.add_adapter(name, model)
    return mixed


def rows_and_names():
    names = ["adept", "pt", "dept", "pt"]
    return [INPUTS[i % len(INPUTS)] for i in range(len(names))], names


@pytest.mark.parametrize("model_name", ["gpt2", "llama", "t5"])
@pytest.mark.slow
def test_a_mixed_forward_equals_each_adapter_alone(model_name) -> None:
    models, tokenizer = singles(model_name)
    mixed = mixed_model(model_name, models)
    texts, names = rows_and_names()
    seq2seq = mixed.is_seq2seq
    tokenizer.padding_side = "right" if seq2seq else "left"
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    decoder = {"decoder_input_ids": torch.tensor([[0, 5, 9]] * len(texts))} if seq2seq else {}
    with torch.no_grad():
        together = mixed(batch["input_ids"], names, batch["attention_mask"], **decoder).logits
        for row, (text, name) in enumerate(zip(texts, names)):
            ids = tokenizer(text, return_tensors="pt")["input_ids"]
            alone = models[name](ids, **{k: v[:1] for k, v in decoder.items()}).logits[0]
            got = together[row] if seq2seq else together[row][batch["attention_mask"][row].bool()]
            torch.testing.assert_close(got, alone, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("model_name", ["gpt2", "llama", "t5"])
def test_mixed_generation_gives_each_adapters_own_tokens(model_name) -> None:
    models, tokenizer = singles(model_name)
    mixed = mixed_model(model_name, models)
    texts, names = rows_and_names()
    tokenizer.padding_side = "right" if mixed.is_seq2seq else "left"
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    options = {"max_new_tokens": 6, "do_sample": False, "eos_token_id": None}
    together = mixed.generate(batch["input_ids"], names, batch["attention_mask"], **options)
    for row, (text, name) in enumerate(zip(texts, names)):
        ids = tokenizer(text, return_tensors="pt")["input_ids"]
        alone = models[name].generate(ids, **options)[0]
        assert torch.equal(together[row][-6:], alone[-6:]), (row, name)


def test_adapters_load_from_disk_and_are_added_and_removed(tmp_path) -> None:
    models, tokenizer = singles("llama")
    save_adapter(models["dept"], tmp_path / "dept")
    base, _ = MODEL_FACTORIES["llama"]()
    mixed = MixedAdapterModel(base.eval())
    mixed.add_adapter("from-disk", tmp_path / "dept")
    mixed.add_adapter("pt", models["pt"])
    ids = tokenizer(INPUTS[:1], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(mixed(ids, ["from-disk"]).logits, models["dept"](ids).logits, atol=1e-4, rtol=1e-4)
        mixed.remove_adapter("from-disk")
        with pytest.raises(AdapterNotFound, match="no adapter named 'from-disk' \\(loaded: pt\\)"):
            mixed(ids, ["from-disk"])
        torch.testing.assert_close(mixed(ids, ["pt"]).logits, models["pt"](ids).logits, atol=1e-4, rtol=1e-4)
    with pytest.raises(AdeptError, match="already loaded"):
        mixed.add_adapter("pt", models["pt"])
    # rows of one adapter take the single-adapter path, beams included; rows of several cannot
    beams = {"num_beams": 2, "max_new_tokens": 3, "do_sample": False}
    assert torch.equal(mixed.generate(ids, ["pt"], **beams), models["pt"].generate(ids, **beams))
    mixed.add_adapter("dept", models["dept"])
    two = torch.cat([ids, ids])
    with pytest.raises(AdeptError, match="one sequence per row"):
        mixed.generate(two, ["pt", "dept"], **beams)


@pytest.mark.parametrize("model_name", ["gpt2", "llama"])
def test_the_shared_prompt_gives_what_running_every_prompt_does(model_name) -> None:
    models, tokenizer = singles(model_name)
    shared = mixed_model(model_name, models)
    base, _ = MODEL_FACTORIES[model_name]()
    unshared = MixedAdapterModel(base.eval(), share_prompt="off")
    for name, model in models.items():
        unshared.add_adapter(name, model)
    assert shared.not_shared_because is None
    widths = []
    shared.base.register_forward_pre_hook(lambda m, a, k: widths.append(k["input_ids"].shape[1]), with_kwargs=True)
    texts, names = rows_and_names()
    for side in ("right", "left"):
        tokenizer.padding_side = side
        batch = tokenizer(texts, return_tensors="pt", padding=True)
        mask = batch["attention_mask"].bool()
        with torch.no_grad():
            got = shared(batch["input_ids"], names, batch["attention_mask"]).logits
            want = unshared(batch["input_ids"], names, batch["attention_mask"]).logits
        assert widths[-1] == batch["input_ids"].shape[1]  # the rows' own tokens only: the prompts were cached
        torch.testing.assert_close(got[mask], want[mask], atol=1e-4, rtol=1e-4)
        kwargs = dict(max_new_tokens=5, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        a = shared.generate(batch["input_ids"], names, batch["attention_mask"], **kwargs)
        b = unshared.generate(batch["input_ids"], names, batch["attention_mask"], **kwargs)
        assert torch.equal(a, b)
    shared.remove_adapter("pt")  # its cached prompt goes with it; the others stay valid
    with torch.no_grad():
        again = shared(batch["input_ids"][:1], ["dept"], batch["attention_mask"][:1]).logits
        alone = unshared(batch["input_ids"][:1], ["dept"], batch["attention_mask"][:1]).logits
    torch.testing.assert_close(again[mask[:1]], alone[mask[:1]], atol=1e-4, rtol=1e-4)


def test_calls_in_two_threads_each_see_their_own_rows_and_leave_nothing_behind() -> None:
    """Thread A generates with one set of adapters; between two of its decoding steps thread B is inside a
    forward with others. Each gets what it gets alone, and after both nothing of either is left on the
    model: a call without adapters uses the default."""
    import threading

    models, tokenizer = singles("llama")
    mixed = mixed_model("llama", models)
    ids = tokenizer(INPUTS[:2], return_tensors="pt", padding=True)
    options = {"max_new_tokens": 4, "do_sample": False, "eos_token_id": None, "pad_token_id": 0}
    a_names, b_names = ["dept", "adept"], ["pt", None]
    a_alone = mixed.generate(ids["input_ids"], a_names, ids["attention_mask"], **options)
    with torch.no_grad():
        b_alone = mixed(ids["input_ids"], b_names, ids["attention_mask"]).logits
    a_paused, b_inside, a_may_go, b_may_go = (threading.Event() for _ in range(4))
    steps = {"a": 0}

    def pause(module, args, kwargs):
        if threading.current_thread().name == "a":
            steps["a"] += 1
            if steps["a"] == 2:  # A's second decoding step, before its embedding runs
                a_paused.set()
                assert a_may_go.wait(60)
        elif threading.current_thread().name == "b":
            b_inside.set()
            assert b_may_go.wait(60)

    results = {}
    handle = mixed.base.register_forward_pre_hook(pause, with_kwargs=True)
    layer = mixed.base.model.layers[0].register_forward_pre_hook(
        lambda m, a, k: pause(m, a, k) if threading.current_thread().name == "b" else None, with_kwargs=True
    )
    try:
        a = threading.Thread(
            name="a",
            target=lambda: results.setdefault(
                "a", mixed.generate(ids["input_ids"], a_names, ids["attention_mask"], **options)
            ),
        )
        a.start()
        assert a_paused.wait(60)

        def run_b():
            with torch.no_grad():
                results["b"] = mixed(ids["input_ids"], b_names, ids["attention_mask"]).logits

        b = threading.Thread(name="b", target=run_b)
        handle.remove()  # B pauses in its first layer, after its embedding: inside its call
        handle = mixed.base.register_forward_pre_hook(
            lambda m, a, k: pause(m, a, k) if threading.current_thread().name == "a" else None, with_kwargs=True
        )
        b.start()
        assert b_inside.wait(60)
        a_may_go.set()  # A's remaining steps run while B is inside its call
        a.join(60)
        b_may_go.set()
        b.join(60)
    finally:
        handle.remove()
        layer.remove()
    assert torch.equal(results["a"], a_alone)
    assert torch.equal(results["b"], b_alone)
    mixed.adapted_embedding.default = "pt"
    with torch.no_grad():
        assert torch.equal(mixed.base.get_input_embeddings()(ids["input_ids"]), _embedded_with(mixed, "pt", ids))


def _embedded_with(model, name: str, batch) -> torch.Tensor:
    from adept_cli.prompt.rows import installed

    embedding = model.adapted_embedding
    with installed(embedding, embedding.plan([name])):
        return embedding(batch["input_ids"])


def test_a_copy_of_a_dept_model_counts_its_own_rows_positions() -> None:
    """DePT's offsets follow each token's position: a deep copy of the model (its hooks copied with it)
    must read the positions of its own calls, padded rows included."""
    import copy

    model, tokenizer = wrap("dept", "llama")
    perturb(model)
    model.eval()
    twin = copy.deepcopy(model)
    tokenizer.padding_side = "left"
    batch = tokenizer(INPUTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        assert torch.equal(twin(**batch).logits, model(**batch).logits)
