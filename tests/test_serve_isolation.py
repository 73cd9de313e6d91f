"""One bad request, row or adapter file harms nothing else on `adept serve`: a row whose sampling fails ends
alone, a model call that fails as a whole runs again in halves until the bad row stands alone, adapters
the base cannot hold (or whose recorded settings are wrong) are refused when loaded, naming the field. In
process: the app over the real stories260K engine."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import load_file, save_file

from adept_cli import save_adapter
from adept_cli.files import sha256_file
from adept_cli.hf import load_model, load_tokenizer
from adept_cli.prompt.adapter_files import ADAPTER_CONFIG, ADAPTER_WEIGHTS, EVALUATION_KEY, WEIGHTS_CHECKSUM
from adept_cli.serving.app import create_app
from adept_cli.serving.batcher import Batcher
from adept_cli.serving.engine import Engine
from adept_cli.serving.protocol import GenerationRow, Job, RowsFailed, Sampling

from .helpers import STORIES, model_path, perturb, wrap

PROMPTS = ["Once upon a time", "Lily saw a big red ball", "The cat was", "Tom and his dog"]


@pytest.fixture(scope="module")
def engine():
    name = model_path(STORIES)
    return Engine(load_model(name), load_tokenizer(name), name)


def adapter(folder: Path, method: str = "adept", prompt_len: int = 3, **evaluation) -> Path:
    model, _ = wrap(method, "llama", prompt_len=prompt_len)
    perturb(model, seed=prompt_len)
    settings = {"task": "sst2", "max_length": 32, **evaluation}
    return save_adapter(model, folder, extra={EVALUATION_KEY: settings})


def rewrite(folder: Path, config: dict | None = None, tensors: dict | None = None) -> None:
    """Change an adapter's files as someone who can write the folder does: checksum recomputed to match."""
    path = folder / ADAPTER_CONFIG
    metadata = json.loads(path.read_text())
    if tensors is not None:
        save_file(tensors, str(folder / ADAPTER_WEIGHTS))
    metadata.update(config or {})
    metadata[WEIGHTS_CHECKSUM] = sha256_file(folder / ADAPTER_WEIGHTS)
    path.write_text(json.dumps(metadata))


def rows_of(engine: Engine, adapter_name: str | None, count: int, max_tokens: int = 8) -> list[GenerationRow]:
    return [
        GenerationRow(adapter_name, engine.prompt_ids(adapter_name, PROMPTS[i % 4], max_tokens), max_tokens)
        for i in range(count)
    ]


def texts(results) -> list[str]:
    return [result.text for result in results]


# -- rows that fail alone ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FailingSampling(Sampling):
    """A row whose sampling raises at its third token, as logits that are no numbers once made it do."""

    calls: list = field(default_factory=list, compare=False)

    def sample(self, logits: torch.Tensor, generator: torch.Generator | None) -> int:
        self.calls.append(1)
        if len(self.calls) == 3:
            raise RuntimeError("probability tensor contains either inf, nan or element < 0")
        return super().sample(logits, generator)


def test_a_row_whose_sampling_fails_fails_alone_and_the_others_answer_as_alone(engine) -> None:
    """Once every row batched with it got the same 500."""
    rows = rows_of(engine, None, 4)
    samplings = [Sampling(), FailingSampling(temperature=0.8, seed=5), Sampling(temperature=0.7, seed=9), Sampling()]
    with pytest.raises(RowsFailed) as failed:
        engine.generate(rows, samplings)
    assert list(failed.value.errors) == [1] and "inf, nan" in str(failed.value.errors[1])
    for index in (0, 2, 3):
        alone = engine.generate(rows_of(engine, None, 4)[index : index + 1], samplings[index])[0]
        assert failed.value.results[index].text == alone.text and alone.text


def test_a_tiny_temperature_samples_as_its_limit_does_greedy(engine) -> None:
    """temperature 1e-320 passed validation, then made every row of its batch fail (logits / T overflowed)."""
    logits = torch.tensor([0.5, 3.0, -1.0, 2.9])
    assert Sampling(temperature=1e-320).sample(logits, torch.Generator().manual_seed(0)) == 1
    assert Sampling(temperature=1e-320, top_p=0.5).sample(logits, None) == 1
    rows = [rows_of(engine, None, 1)[0] for _ in range(3)]  # one prompt, three samplings
    together = engine.generate(rows, [Sampling(temperature=1e-320, seed=1), Sampling(), Sampling(temperature=1e-30)])
    assert len({text for text in texts(together)}) == 1  # each draws the top token every step: greedy


class PoisonedEngine:
    """An engine whose model call fails as a whole whenever a poisoned row is in it (as a row that breaks
    the forward pass would make it)."""

    def __init__(self, engine: Engine, poison: str):
        self.engine, self.poison, self.calls = engine, poison, []
        self.lock, self.residency = engine.lock, engine.residency
        self.ready, self.release = engine.ready, engine.release

    def generate(self, rows, samplings):
        self.calls.append(len(rows))
        if any(self.engine.decode(row.input_ids) == self.poison for row in rows):
            raise RuntimeError("the forward pass failed")
        return self.engine.generate(rows, samplings)

    def score(self, rows):
        self.calls.append(len(rows))
        if any(source == self.poison for _, source, _ in rows):
            raise RuntimeError("the forward pass failed")
        return self.engine.score(rows)


def test_a_model_call_that_fails_whole_runs_again_without_the_bad_row(engine) -> None:
    poisoned = PoisonedEngine(engine, PROMPTS[2])
    batcher = Batcher(poisoned, 8, 1000.0)
    rows = rows_of(engine, None, 8)
    expected = texts(engine.generate(rows_of(engine, None, 8), Sampling()))
    with engine.lock:  # everything queued first: one batch of 8
        batcher.start()
        futures = [batcher.submit(Job(None, generation=row, sampling=Sampling())) for row in rows]
        scored = [batcher.submit(Job(None, score=(prompt, ["yes", "no"]))) for prompt in PROMPTS]
    for index, future in enumerate(futures):
        if PROMPTS[index % 4] == PROMPTS[2]:
            with pytest.raises(RuntimeError, match="forward pass failed"):
                future.result(timeout=120)
        else:
            assert future.result(timeout=120).text == expected[index]
    with pytest.raises(RuntimeError):
        scored[2].result(timeout=120)
    assert [len(scored[i].result(timeout=120)) for i in (0, 1, 3)] == [2, 2, 2]
    batcher.stop()
    assert poisoned.calls[0] == 8 and batcher.metrics.isolated_batches >= 2


# -- adapters the base cannot hold, and crafted configs ----------------------------------------------


def client(engine: Engine, folder: Path) -> TestClient:
    return TestClient(create_app(engine, adapter_dirs=[str(folder)]))


def crafted(folder: Path, kind: str) -> Path:
    """An adapter folder made wrong in one way, its checksum rewritten to match."""
    path = adapter(folder / kind)
    tensors = load_file(str(path / ADAPTER_WEIGHTS))
    if kind == "prompt-100000":  # the header says 100,000 slots: nothing of that size is read or allocated
        config = json.loads((path / ADAPTER_CONFIG).read_text())
        rewrite(path, {"method_config": {**config["method_config"], "prompt_len": 100_000}})
    elif kind == "nan-weights":
        rewrite(path, tensors={**tensors, "prompt": torch.full_like(tensors["prompt"], float("nan"))})
    elif kind == "integer-weights":
        rewrite(path, tensors={**tensors, "prompt": tensors["prompt"].to(torch.int32)})
    elif kind == "more-numbers":
        rewrite(path, tensors={**tensors, "extra": torch.zeros(10)})
    else:
        field, value = {
            "task-12": ("task", 12),
            "chat-template-5": ("chat_template", 5),
            "chat-template-a-path": ("chat_template", "/etc/passwd"),
            "max-length-abc": ("max_length", "abc"),
            "max-length-huge": ("max_length", 10**12),
            "max-target-negative": ("max_target_length", -1),
        }[kind]
        evaluation = json.loads((path / ADAPTER_CONFIG).read_text())[EVALUATION_KEY]
        rewrite(path, {EVALUATION_KEY: {**evaluation, field: value}})
    return path


@pytest.mark.parametrize(
    "kind, words",
    [
        ("prompt-100000", "method_config.prompt_len 100000 leaves no room for an input in the 512 positions"),
        ("nan-weights", "prompt hold NaN or infinite values"),
        ("integer-weights", "prompt holds I32 values; an adapter holds floats"),
        ("more-numbers", "holds 653 numbers; "),
        ("task-12", "evaluation: task must be a non-empty string; got 12"),
        ("chat-template-5", "chat_template must be a non-empty string; got 5"),
        ("chat-template-a-path", "chat_template must be auto, none or the template's text"),
        ("max-length-abc", "max_length must be an integer; got 'abc'"),
        ("max-length-huge", "set max_length to at most"),
        ("max-target-negative", "max_target_length must be >= 1; got -1"),
    ],
)
def test_an_adapter_that_does_not_fit_is_refused_at_load_naming_the_field(engine, tmp_path, kind, words) -> None:
    """Each was once accepted, then stalled the engine for 11 minutes, answered 500, or scored null."""
    path = crafted(tmp_path, kind)
    with client(engine, tmp_path) as http:
        answer = http.post("/v1/adapters", json={"name": "crafted", "path": str(path)})
        assert 400 <= answer.status_code < 500, answer.text
        assert words in answer.json()["error"]["message"], answer.text
        assert "crafted" not in engine.adapters
        good = http.post("/v1/completions", json={"model": engine.model_name, "prompt": "Once", "max_tokens": 2})
        assert good.status_code == 200


def test_a_link_inside_the_folder_to_weights_outside_is_refused(engine, tmp_path) -> None:
    """The folder is the operator's; a link inside it may point anywhere: every file is followed."""
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    source = adapter(outside / "a")
    inside = adapter(allowed / "a")
    (inside / ADAPTER_WEIGHTS).unlink()
    (inside / ADAPTER_WEIGHTS).symlink_to(source / ADAPTER_WEIGHTS)
    shared = adapter(allowed / "store")  # a link that stays inside the folders is fine
    linked = adapter(allowed / "b")
    (linked / ADAPTER_WEIGHTS).unlink()
    (linked / ADAPTER_WEIGHTS).symlink_to(shared / ADAPTER_WEIGHTS)
    rewrite(linked)
    with client(engine, allowed) as http:
        refused = http.post("/v1/adapters", json={"name": "a", "path": "a"})
        assert refused.status_code == 403 and "adapter_model.safetensors is a link" in refused.text
        assert http.post("/v1/adapters", json={"name": "b", "path": "b"}).status_code == 201
        http.delete("/v1/adapters/b")


# -- small things a client can get wrong ---------------------------------------------------------------


def test_a_bool_is_not_a_count_and_the_bearer_scheme_is_any_case(engine, tmp_path) -> None:
    name = engine.model_name
    app = create_app(engine, api_key="k3y")
    with TestClient(app) as http:
        for field, value in (("max_tokens", True), ("temperature", True), ("seed", False), ("stream", 1)):
            body = {"model": name, "prompt": "Once", field: value}
            answer = http.post("/v1/completions", json=body, headers={"Authorization": "Bearer k3y"})
            assert answer.status_code == 422 and field in answer.text, (field, answer.text)
        for header in ("bearer k3y", "BEARER k3y", "Bearer  k3y"):
            answer = http.get("/v1/models", headers={"Authorization": header})
            assert answer.status_code == 200, header
        for header in ("Basic k3y", "Bearer k3", "k3y", "Bearerk3y"):
            assert http.get("/v1/models", headers={"Authorization": header}).status_code == 401, header
