"""Adapters served from folders by name (`adept serve --serve-dir DIR --max-resident N`): read on their
first request, at most N in memory, the least recently used out; every answer equals the same request
alone, for adapters read, evicted and read again mid-load; damaged adapters among good ones named at
startup and refused on request (4xx) while the good ones serve; two folders of one name refused; more
adapters than memory holds refused before the server listens. The real stories260K, adapters with random
distinct weights."""

from __future__ import annotations

import os
import random
import shutil
from collections import Counter
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from adept_cli import save_adapter
from adept_cli.cli import app
from adept_cli.errors import AdeptError
from adept_cli.prompt.adapter_files import ADAPTER_CONFIG, ADAPTER_WEIGHTS, EVALUATION_KEY
from adept_cli.serving.adapter_library import AdapterLibrary, NameClash
from adept_cli.serving.engine import Engine
from adept_cli.serving.protocol import GenerationRow, Job, RequestError, Sampling

from .helpers import INPUTS, perturb, stories, wrap

EVALUATION = {"task": "sst2", "max_length": 48, "max_target_length": 8}
METHODS = ("pt", "dept", "adept")


def write_adapters(folder: Path, count: int, start: int = 0) -> list[str]:
    """`count` adapters of the three methods, each with weights of its own, named a000, a001, ..."""
    folder.mkdir(parents=True, exist_ok=True)
    models = {method: wrap(method, "llama", prompt_len=2 + index)[0] for index, method in enumerate(METHODS)}
    names = []
    for index in range(start, start + count):
        model = models[METHODS[index % 3]]
        perturb(model, scale=0.2, seed=1000 + index)
        names.append(f"a{index:03d}")
        save_adapter(model, folder / names[-1], extra={EVALUATION_KEY: EVALUATION})
    return names


def rows_for(engine: Engine, names: list[str]) -> list[tuple[GenerationRow, Sampling]]:
    """One request per name: a prompt and a sampling each (greedy, or seeded sampling)."""
    work = []
    for index, name in enumerate(names):
        ids = engine.tokenizer(INPUTS[index % len(INPUTS)])["input_ids"]
        sampling = Sampling(temperature=0.8, seed=index % 5) if index % 4 == 3 else Sampling()
        work.append((GenerationRow(name, ids, 4), sampling))
    return work


def alone(folder: Path, names: list[str], work) -> list[str]:
    """Each request run alone on an engine that holds every adapter (named, read at once)."""
    base, tokenizer = stories()
    reference = Engine(base, tokenizer, "base")
    for name in sorted(set(names)):
        reference.add(name, folder / name)
    return [
        reference.generate([GenerationRow(row.adapter, row.input_ids, 4)], sampling)[0].text for row, sampling in work
    ]


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> tuple[Path, list[str]]:
    folder = tmp_path_factory.mktemp("served") / "adapters"
    return folder, write_adapters(folder, 200)


def test_200_adapters_at_most_16_in_memory_each_answer_as_alone(library) -> None:
    folder, names = library
    base, tokenizer = stories()
    engine = Engine(base, tokenizer, "base", max_batch_size=32, max_wait_ms=50.0)
    report = engine.serve_folders(AdapterLibrary([folder]), max_resident=16)
    assert (report.served, report.unusable) == (200, {})
    assert len(engine.model.adapted_embedding.adapters) == 0  # nothing read yet: lazily, on request
    held: list[int] = []
    reads: Counter[str] = Counter()
    load = engine._load

    def counting_load(name, source):  # what the model holds at each read
        result = load(name, source)
        held.append(len(engine.model.adapted_embedding.adapters))
        reads[name] += 1
        return result

    engine._load = counting_load
    # every adapter twice (the second time long evicted), then a shuffled third pass with repeats
    order = names + names + random.Random(0).choices(names, k=120)
    work = rows_for(engine, order)
    engine.start()
    try:
        futures = [engine.submit(Job(row.adapter, generation=row, sampling=s)) for row, s in work]
        got = [future.result(timeout=600).text for future in futures]
    finally:
        engine.stop()
    assert got == alone(folder, order, work)
    assert max(held) <= 16
    metrics = engine.metrics.snapshot()
    assert set(reads) == set(names) and sum(count > 1 for count in reads.values()) >= 50  # read, out, read again
    assert metrics["adapter_loads"] == sum(reads.values()) and metrics["adapter_evictions"] >= sum(reads.values()) - 16
    assert metrics["adapters_resident"] <= 16 and metrics["adapters_served"] == 200
    assert metrics["mixed_batches"] > 0
    per_adapter = engine._held_bytes(next(iter(engine.model.adapted_embedding.adapters)))
    assert 0 < metrics["adapter_bytes"] <= 16 * per_adapter * 2


def damage(folder: Path, name: str) -> None:
    weights = folder / name / ADAPTER_WEIGHTS
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF  # one byte of a number: the checksum no longer matches
    weights.write_bytes(bytes(data))


@pytest.fixture
def mixed_folder(tmp_path) -> Path:
    folder = tmp_path / "adapters"
    write_adapters(folder, 4)
    damage(folder, "a001")
    (folder / "a002" / ADAPTER_CONFIG).write_text("{not json")
    (folder / "notes").mkdir()  # not an adapter: passed over, named
    return folder


def test_damaged_adapters_are_named_at_start_and_refused_on_request_while_the_good_serve(mixed_folder) -> None:
    base, tokenizer = stories()
    engine = Engine(base, tokenizer, "base")
    report = engine.serve_folders(AdapterLibrary([mixed_folder]), max_resident=2)
    assert report.served == 2 and set(report.unusable) == {"a001", "a002"}
    assert "checksum" in report.unusable["a001"] and "a002" in report.unusable["a002"]
    assert any("notes" in line for line in report.passed_over)
    for bad in ("a001", "a002"):
        with pytest.raises(RequestError) as refused:
            engine.resolve(bad)
        assert refused.value.status == 422 and bad in str(refused.value)
    # fixed on disk: served from the next request, no restart
    write_adapters(mixed_folder, 1, start=1)
    assert engine.resolve("a001") == "a001"
    # damaged after it was listed: its rows fail alone, the good one's row beside it answers
    damage(mixed_folder, "a003")
    engine.start()
    try:
        work = rows_for(engine, ["a000", "a003", "a001"])
        futures = [engine.submit(Job(row.adapter, generation=row, sampling=s)) for row, s in work]
        with pytest.raises(RequestError, match="a003.*checksum"):
            futures[1].result(timeout=120)
        assert [futures[0].result().text, futures[2].result().text] == alone(
            mixed_folder, ["a000", "a001"], [work[0], work[2]]
        )
    finally:
        engine.stop()
    assert "a003" not in engine.adapters and engine.unusable["a003"]


def test_folders_added_and_removed_while_serving_are_seen(tmp_path) -> None:
    folder = tmp_path / "adapters"
    write_adapters(folder, 2)
    base, tokenizer = stories()
    engine = Engine(base, tokenizer, "base")
    engine.serve_folders(AdapterLibrary([folder]))
    write_adapters(folder, 1, start=2)
    assert engine.resolve("a002") == "a002"  # asked for by name before any listing
    write_adapters(folder, 1, start=3)
    shutil.rmtree(folder / "a000")
    engine.refresh()  # what GET /v1/models does first
    assert sorted(engine.adapters) == ["a001", "a002", "a003"]
    with pytest.raises(RequestError, match="served from a folder"):
        engine.remove("a001")


def test_two_folders_of_one_name_and_too_little_memory_are_refused_before_serving(tmp_path) -> None:
    for side in ("left", "right"):
        write_adapters(tmp_path / side, 1)
    base, tokenizer = stories()
    engine = Engine(base, tokenizer, "base")
    with pytest.raises(NameClash) as clash:
        engine.serve_folders(AdapterLibrary([tmp_path / "left", tmp_path / "right"]))
    assert str(tmp_path / "left" / "a000") in str(clash.value) and str(tmp_path / "right" / "a000") in str(clash.value)
    write_adapters(tmp_path / "many", 6)
    engine._free_memory = lambda: 100  # bytes: less than one adapter
    with pytest.raises(AdeptError, match="--max-resident"):
        engine.serve_folders(AdapterLibrary([tmp_path / "many"]), max_resident=4)


def test_the_http_api_lists_every_adapter_reports_memory_and_answers_4xx_for_a_damaged_one(mixed_folder) -> None:
    from fastapi.testclient import TestClient

    from adept_cli.serving.app import create_app

    base, tokenizer = stories()
    engine = Engine(base, tokenizer, "base")
    engine.serve_folders(AdapterLibrary([mixed_folder]), max_resident=1)
    with TestClient(create_app(engine)) as client:
        listed = [card["id"] for card in client.get("/v1/models").json()["data"]]
        assert listed == ["base", "a000", "a003"]
        for name in ("a000", "a003", "a000"):
            answer = client.post("/v1/completions", json={"model": name, "prompt": "Once", "max_tokens": 3})
            assert answer.status_code == 200, answer.text
        refused = client.post("/v1/completions", json={"model": "a001", "prompt": "Once", "max_tokens": 3})
        assert refused.status_code == 422 and "a001" in refused.json()["error"]["message"]
        assert refused.json()["error"]["code"] == "adapter_unusable"
        gone = client.delete("/v1/adapters/a000")
        assert gone.status_code == 409
        metrics = client.get("/metrics", params={"format": "json"}).json()
        assert (metrics["adapter_loads"], metrics["adapter_evictions"], metrics["adapters_resident"]) == (3, 2, 1)
        assert "adept_adapter_bytes " in client.get("/metrics").text


@pytest.mark.slow
def test_adept_serve_serve_dir_names_bad_adapters_at_start_and_serves_the_rest(mixed_folder, tmp_path) -> None:
    from .test_serve import Server

    started = Server("--serve-dir", str(mixed_folder), "--max-resident", "1")
    try:
        output = "".join(started.output)
        assert "serving 2 adapter(s) from --serve-dir" in output
        assert "not serving 'a001'" in output and "not serving 'a002'" in output and "notes" in output
        for name in ("a000", "a003"):
            answer = httpx.post(started.url + "/v1/completions", json={"model": name, "prompt": "Once"}, timeout=60)
            assert answer.status_code == 200, answer.text
        refused = httpx.post(started.url + "/v1/completions", json={"model": "a002", "prompt": "Once"}, timeout=60)
        assert refused.status_code == 422 and "a002" in refused.text
    finally:
        assert started.stop() == 0, "".join(started.output)


def test_adept_serve_refuses_two_folders_of_one_name_naming_both(tmp_path) -> None:
    for side in ("left", "right"):
        write_adapters(tmp_path / side, 1)
    result = CliRunner().invoke(
        app, ["serve", "--port", "0", "--serve-dir", str(tmp_path / "left"), "--serve-dir", str(tmp_path / "right")]
    )
    assert result.exit_code == 2  # a usage error, as every refusal before work starts
    assert "left" in result.output and "right" in result.output and "a000" in result.output
    assert "Traceback" not in result.output
    alone_bound = CliRunner().invoke(app, ["serve", "--port", "0", "--max-resident", "2", "--model", "x"])
    assert alone_bound.exit_code != 0 and "--serve-dir" in alone_bound.output


def test_vllm_lora_slots_follow_the_adapters_served_and_a_bad_pair_is_refused() -> None:
    """Sizing needs no vLLM: the method reads the served adapters and the flags the user gave."""
    from types import SimpleNamespace

    from adept_cli.serving.residency import Residency
    from adept_cli.serving.vllm_engine import MAX_LORA_SLOTS, VllmEngine, VllmError

    def sized(kept: int, lazy: int, limit: int | None, flags: str = "", given: dict | None = None):
        adapters = {f"k{i}": SimpleNamespace(method="adept", lazy=False) for i in range(kept)}
        adapters |= {f"l{i}": SimpleNamespace(method="adept", lazy=True) for i in range(lazy)}
        adapters |= {"pt": SimpleNamespace(method="pt", lazy=True)}  # a PT adapter takes no slot
        args = SimpleNamespace(**{"max_loras": None, "max_cpu_loras": None, **(given or {})})
        engine = SimpleNamespace(
            adapters=adapters, residency=Residency(limit), given_flags=flags, args=args, plain=False
        )
        VllmEngine._size_lora_slots(engine)
        return args.max_loras, args.max_cpu_loras

    assert sized(1, 0, None) == (2, 2)  # one ADePT adapter and the zero LoRA
    assert sized(2, 1000, 8) == (11, 11)  # 2 kept + at most 8 from folders, + 1
    assert sized(40, 0, None) == (MAX_LORA_SLOTS, 41)  # rows of more wait for a slot
    assert sized(0, 3, None) == (4, 4)
    with pytest.raises(VllmError, match="--max-cpu-loras 2 is below --max-loras 4"):
        sized(0, 3, None, "--max-loras 4 --max-cpu-loras 2", {"max_loras": 4, "max_cpu_loras": 2})


def test_metrics_an_engine_cannot_see_are_null_and_left_out_of_prometheus() -> None:
    from adept_cli.serving.metrics import Metrics

    metrics = Metrics(not_seen=frozenset({"batches", "mixed_batches"}))
    metrics.generated_tokens, metrics.busy_seconds = 10, 2.0
    snapshot = metrics.snapshot()
    assert snapshot["batches"] is None and snapshot["mixed_batches"] is None
    assert snapshot["tokens_per_second"] == 5.0
    text = metrics.prometheus()
    assert "adept_batches" not in text and "adept_tokens_per_second 5.0" in text


def test_work_folders_of_killed_vllm_servers_are_removed_by_the_next(tmp_path) -> None:
    """A server killed with -9 cannot remove its LoRA files; the next one removes them, and only them."""
    import subprocess
    import sys

    from adept_cli.serving.vllm_engine import OWNER_FILE, WORK_PREFIX, remove_abandoned_work

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    killed, alive, foreign = tmp_path / f"{WORK_PREFIX}a", tmp_path / f"{WORK_PREFIX}b", tmp_path / f"{WORK_PREFIX}c"
    for folder, owner in ((killed, gone.pid), (alive, os.getpid()), (foreign, None)):
        folder.mkdir()
        (folder / "lora.safetensors").write_bytes(b"x")
        if owner is not None:
            (folder / OWNER_FILE).write_text(str(owner))
    assert remove_abandoned_work(tmp_path) == [killed]
    assert not killed.exists() and alive.exists() and foreign.exists()
