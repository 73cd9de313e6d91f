"""Save -> load gives identical logits; the files hold only the adapter; bad directories fail clearly."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from adept_cli import AdapterError, AdeptWarning, __version__, load_adapter, save_adapter
from adept_cli.prompt.adapter_files import ADAPTER_CONFIG, ADAPTER_WEIGHTS

from .helpers import INPUTS, METHODS, MODEL_FACTORIES, generation_batch, perturb, wrap


def logits_of(model, tokenizer) -> torch.Tensor:
    batch = generation_batch(model, tokenizer)
    extra = {"decoder_input_ids": torch.tensor([[0, 3, 7]] * len(INPUTS))} if model.is_seq2seq else {}
    with torch.no_grad():
        return model(**batch, **extra).logits


@pytest.mark.parametrize("model_name", ["t5", "llama"])
@pytest.mark.parametrize("method", METHODS)
def test_save_then_load_reproduces_logits_exactly(tmp_path, method: str, model_name: str) -> None:
    model, tokenizer = wrap(method, model_name)
    perturb(model)
    model.eval()
    expected = logits_of(model, tokenizer)
    save_adapter(model, tmp_path / "adapter")

    assert sorted(p.name for p in (tmp_path / "adapter").iterdir()) == [ADAPTER_CONFIG, ADAPTER_WEIGHTS]
    tensors = load_file(str(tmp_path / "adapter" / ADAPTER_WEIGHTS))
    assert set(tensors) == set(model.adapter.state_dict())
    assert sum(t.numel() for t in tensors.values()) == model.num_trainable_params()
    base_names = {name for name, _ in model.base.named_parameters()}
    assert not base_names & set(tensors)

    config = json.loads((tmp_path / "adapter" / ADAPTER_CONFIG).read_text())
    assert config["method"] == method
    assert config["library_version"] == __version__
    assert config["dim"] == model.dim
    assert config["trainable_params"] == model.num_trainable_params()
    assert config["model_kind"] == ("seq2seq" if model.is_seq2seq else "causal")

    fresh_base, _ = MODEL_FACTORIES[model_name]()
    loaded = load_adapter(tmp_path / "adapter", base=fresh_base)
    loaded.eval()
    assert torch.equal(logits_of(loaded, tokenizer), expected)
    assert loaded.config == model.config


def test_load_by_recorded_base_model_name(tmp_path) -> None:
    from .helpers import STORIES, model_path, stories

    base, tokenizer = stories()
    from adept_cli import AdeptConfig, PromptTunedModel

    model = PromptTunedModel(base, AdeptConfig(prompt_len=3, bottleneck=2), base_model_name=model_path(STORIES))
    perturb(model)
    save_adapter(model, tmp_path / "a")
    loaded = load_adapter(tmp_path / "a")  # base loaded from base_model_name_or_path
    assert torch.equal(logits_of(loaded, tokenizer), logits_of(model, tokenizer))


def test_saving_over_an_adapter_replaces_it_whole(tmp_path) -> None:
    model, tokenizer = wrap("adept", "llama")
    save_adapter(model, tmp_path / "a")
    perturb(model)
    save_adapter(model, tmp_path / "a")
    loaded = load_adapter(tmp_path / "a", base=MODEL_FACTORIES["llama"]()[0])
    assert torch.equal(loaded.adapter.prompt, model.adapter.prompt)
    assert [p.name for p in tmp_path.iterdir()] == ["a"]  # no scratch directories left behind


def test_missing_directory_and_files_are_named(tmp_path) -> None:
    base, _ = MODEL_FACTORIES["llama"]()
    with pytest.raises(AdapterError, match="not found"):
        load_adapter(tmp_path / "nope", base=base)
    (tmp_path / "empty").mkdir()
    with pytest.raises(AdapterError, match=ADAPTER_CONFIG):
        load_adapter(tmp_path / "empty", base=base)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / ADAPTER_CONFIG).write_text("{not json")
    with pytest.raises(AdapterError, match="not valid JSON"):
        load_adapter(tmp_path / "bad", base=base)


def test_width_and_kind_mismatches_are_refused(tmp_path) -> None:
    model, _ = wrap("adept", "gpt2")  # width 32
    save_adapter(model, tmp_path / "a")
    llama, _ = MODEL_FACTORIES["llama"]()  # width 64
    with pytest.raises(AdapterError, match="width 32"):
        load_adapter(tmp_path / "a", base=llama)
    assert not isinstance(llama.get_input_embeddings(), type(model.adapted_embedding))  # left unwrapped
    t5, _ = MODEL_FACTORIES["t5"]()
    with pytest.raises(AdapterError, match="causal"):
        load_adapter(tmp_path / "a", base=t5)


def test_tensor_shape_mismatch_is_refused(tmp_path) -> None:
    model, _ = wrap("adept", "llama")
    save_adapter(model, tmp_path / "a")
    tensors = load_file(str(tmp_path / "a" / ADAPTER_WEIGHTS))
    tensors["prompt"] = torch.zeros(2, 64)
    save_file(tensors, str(tmp_path / "a" / ADAPTER_WEIGHTS))
    with pytest.raises(AdapterError, match="does not match the checksum"):  # changed after it was written
        load_adapter(tmp_path / "a", base=MODEL_FACTORIES["llama"]()[0])
    config = tmp_path / "a" / "adapter_config.json"  # as another tool might write it: no checksum
    config.write_text(json.dumps({k: v for k, v in json.loads(config.read_text()).items() if k != "weights_sha256"}))
    no_checksum = pytest.warns(AdeptWarning, match="records no weights_sha256")
    with no_checksum, pytest.raises(AdapterError, match="holds 579 numbers"):
        load_adapter(tmp_path / "a", base=MODEL_FACTORIES["llama"]()[0])  # told from the file's header alone
    tensors["prompt"] = torch.zeros(8, 32)
    save_file(tensors, str(tmp_path / "a" / ADAPTER_WEIGHTS))  # as many numbers, in the wrong shape
    with pytest.warns(AdeptWarning), pytest.raises(AdapterError, match="prompt has shape"):
        load_adapter(tmp_path / "a", base=MODEL_FACTORIES["llama"]()[0])


def test_what_adept_writes_has_the_usual_permissions_not_private_scratch_ones(tmp_path) -> None:
    """Atomic writes go through mkstemp / mkdtemp, which make 0600 / 0700 entries: a colleague, or a server
    running as another user, could not read a run's config or its adapter."""
    import os

    from adept_cli.files import write_text_atomic

    umask = os.umask(0o022)
    os.umask(umask)
    model, _ = wrap("pt", "llama", prompt_len=2)
    folder = save_adapter(model, tmp_path / "adapter")
    write_text_atomic(tmp_path / "config.yaml", "steps: 1\n")
    assert folder.stat().st_mode & 0o777 == 0o777 & ~umask
    for file in [*folder.iterdir(), tmp_path / "config.yaml"]:
        assert file.stat().st_mode & 0o777 == 0o666 & ~umask, file
