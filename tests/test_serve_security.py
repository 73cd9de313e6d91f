"""What a client of `adept serve` may make the server read or run: adapters only from the folders the
operator named (`--adapter-dir`), never code. In process (the app over the real stories260K engine), so an
attack that ran code would leave its mark here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from adept_cli import save_adapter
from adept_cli.hf import load_model, load_tokenizer
from adept_cli.prompt.adapter_files import EVALUATION_KEY
from adept_cli.serving.app import create_app
from adept_cli.serving.batcher import Batcher
from adept_cli.serving.engine import Engine

from .helpers import STORIES, model_path, wrap

MARK = "ran.txt"


def hostile_task(folder: Path) -> Path:
    """A task file whose metric is a function in module.py beside it; importing module.py leaves a mark."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "module.py").write_text(
        f"open({str(folder / MARK)!r}, 'w').write('ran')\ndef score(p, r):\n    return 1.0\n"
    )
    (folder / "data").mkdir(exist_ok=True)
    (folder / "data" / "train.jsonl").write_text('{"text": "a", "out": "b"}\n')
    task = folder / "task.yaml"
    task.write_text("name: evil\ntemplate: '{text}'\ntarget_field: out\nmetrics: [module.score]\ndata_dir: data\n")
    return task


def adapter(folder: Path, task: str = "sst2") -> Path:
    model, _ = wrap("pt", "llama", prompt_len=2)
    return save_adapter(model, folder, extra={EVALUATION_KEY: {"task": task, "max_length": 32}})


@pytest.fixture(scope="module")
def engine():
    name = model_path(STORIES)
    return Engine(load_model(name), load_tokenizer(name), name)


def client(engine: Engine, folders: list[Path]) -> TestClient:
    return TestClient(create_app(engine, adapter_dirs=[str(f) for f in folders]))


def add(http: TestClient, name: str, path: str, task: str | None = None):
    body = {"name": name, "path": path, **({"task": task} if task else {})}
    return http.post("/v1/adapters", json=body)


def test_without_an_adapter_dir_adding_over_http_is_off(engine, tmp_path: Path) -> None:
    path = adapter(tmp_path / "a")
    with client(engine, []) as http:
        answer = add(http, "a", str(path))
    assert answer.status_code == 403 and answer.json()["error"]["code"] == "adapter_loading_disabled"
    assert "--adapter-dir" in answer.json()["error"]["message"]


def test_a_task_file_named_over_http_is_refused_and_its_code_never_runs(engine, tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    adapter(allowed / "a")
    task = hostile_task(tmp_path / "elsewhere")
    inside = hostile_task(allowed / "tasks")
    with client(engine, [allowed]) as http:
        for named in (str(task), str(inside)):
            answer = add(http, "a", "a", task=named)
            assert answer.status_code == 403 and answer.json()["error"]["code"] == "task_not_allowed"
    assert not (task.parent / MARK).exists() and not (inside.parent / MARK).exists()


def test_a_recorded_task_file_is_read_without_running_its_code(engine, tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    inside = hostile_task(allowed / "tasks")
    outside = hostile_task(tmp_path / "elsewhere")
    adapter(allowed / "reads-inside", task=str(inside))
    adapter(allowed / "reads-outside", task=str(outside))
    with client(engine, [allowed]) as http:
        ok = add(http, "inside", "reads-inside")
        assert ok.status_code == 201, ok.text
        assert ok.json()["task"] == "evil"
        refused = add(http, "outside", "reads-outside")
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "task_not_allowed"
    assert not (inside.parent / MARK).exists() and not (outside.parent / MARK).exists()


def test_paths_outside_the_folders_get_one_answer_whether_or_not_they_exist(engine, tmp_path: Path) -> None:
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    adapter(outside / "real")
    allowed.mkdir()
    (allowed / "link").symlink_to(outside / "real")  # a link inside that leads out
    attempts = [str(outside / "real"), str(outside / "missing"), "../outside/real", "link", "/etc", "a\x00b"]
    with client(engine, [allowed]) as http:
        answers = [add(http, "x", path) for path in attempts]
    for path, answer in zip(attempts, answers):
        error = answer.json()["error"]
        assert answer.status_code == 403 and error["code"] == "adapter_not_allowed", (path, answer.text)
        assert error["message"] == answers[0].json()["error"]["message"].replace(repr(attempts[0]), repr(path))


def test_an_adapter_inside_the_folder_is_added_and_answers(engine, tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    adapter(allowed / "runs" / "sst2")
    with client(engine, [allowed]) as http:
        relative = add(http, "by-relative-path", "runs/sst2")
        absolute = add(http, "by-absolute-path", str(allowed / "runs" / "sst2"))
        assert relative.status_code == 201 and absolute.status_code == 201
        answer = http.post("/v1/predict", json={"model": "by-relative-path", "inputs": "a gripping film"})
    assert answer.status_code == 200 and json.loads(answer.text)["predictions"][0]["label"] in ("negative", "positive")


def test_client_mistakes_are_4xx_and_the_server_goes_on(engine, tmp_path: Path) -> None:
    """Each once answered 500 (internal error)."""
    name = model_path(STORIES)
    deep = tmp_path / "allowed" / "deep"
    deep.mkdir(parents=True)
    (deep / "adapter_config.json").write_text('{"format": ' + "[" * 200_000 + "]" * 200_000 + "}")
    body = '{"model": "%s", "prompt": %s, "max_tokens": 2}'
    mistakes = [
        ({"json": {"model": name, "prompt": "a", "seed": 2**63}}, 422, "seed"),
        ({"json": {"model": name, "prompt": "a", "seed": -(2**63)}}, 422, "seed"),
        ({"content": body % (name, '"\\ud800 lone"')}, 422, "lone surrogate"),
        ({"content": body % (name, "[" * 100_000 + "]" * 100_000)}, 400, "body"),
    ]
    with client(engine, [tmp_path / "allowed"]) as http:
        for request, status, words in mistakes:
            answer = http.post("/v1/completions", **request)
            assert answer.status_code == status and words in answer.text, (words, answer.text[:300])
        nested = add(http, "deep", "deep")
        assert nested.status_code == 400 and "nested too deeply" in nested.text, nested.text
        fine = http.post("/v1/completions", json={"model": name, "prompt": "Once", "max_tokens": 2, "seed": 2**63 - 1})
        assert fine.status_code == 200, fine.text


def test_a_chunked_body_is_refused_before_it_is_read(engine, tmp_path: Path) -> None:
    def chunks():
        yield b'{"model": "x", "prompt": "'
        yield b"a" * 1024
        yield b'"}'

    with client(engine, []) as http:
        answer = http.post("/v1/completions", content=chunks())
    assert answer.status_code == 411 and answer.json()["error"]["code"] == "length_required"


def test_removing_an_adapter_fails_its_queued_requests_with_404(engine, tmp_path: Path) -> None:
    """What DELETE does to requests in flight (docs/predicting.md): it waits for the batch that is running;
    requests still queued for the adapter then fail with 404, and requests for other adapters go on."""
    from adept_cli.prompt.model import AdapterNotFound
    from adept_cli.serving.protocol import Job

    engine.add("doomed", adapter(tmp_path / "doomed"))
    engine.add("kept", adapter(tmp_path / "kept"))
    batcher = Batcher(engine, 8, 1.0)
    batcher.start()
    try:
        with engine.lock:  # the model is busy: these requests wait in the queue
            doomed = [batcher.submit(Job("doomed", score=("a fine film", ["good", "bad"]))) for _ in range(6)]
            kept = [batcher.submit(Job("kept", score=("a fine film", ["good", "bad"]))) for _ in range(2)]
            engine.remove("doomed")
        for future in doomed:
            with pytest.raises(AdapterNotFound):
                future.result(timeout=60)
        assert all(len(future.result(timeout=60)) == 2 for future in kept)
    finally:
        batcher.stop()
        engine.remove("kept")
