"""`adept serve`: the real server in a subprocess on a free port, called with the official `openai` client
and with httpx. Four adapters (PT, DePT, two ADePT of different prompt lengths; three classification
tasks and one generation task) over the real stories260K Llama, their weights perturbed as after training.
Every answer is checked against the adapter run alone: `adept predict` for /v1/predict, the adapter's
own `generate` for completions."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from adept_cli import save_adapter
from adept_cli.cli import app
from adept_cli.prompt.adapter_files import EVALUATION_KEY
from adept_cli.prompt.io import load_adapter

from .helpers import STORIES, data_dir, model_path, perturb, read_jsonl, stories, wait_until, wrap

pytestmark = pytest.mark.slow  # every test here runs adept serve in a process of its own

runner = CliRunner()
KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
# name -> (method, prompt length, task, perturbation seed)
ADAPTERS = {
    "sst2-pt": ("pt", 6, "sst2", 11),
    "mrpc-dept": ("dept", 4, "mrpc", 12),
    "rte-adept": ("adept", 3, "rte", 13),
    "stsb-adept": ("adept", 9, "stsb", 14),
}
FIELDS = {"sst2": ("sentence",), "mrpc": ("sentence1", "sentence2"), "rte": ("premise", "hypothesis")}
FIELDS["stsb"] = ("sentence1", "sentence2")
PROMPTS = ["Once upon a time", "Lily saw a big red ball", "The cat was", "Tom and his dog"]


@pytest.fixture(scope="module")
def adapters(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("adapters")
    paths = {}
    for name, (method, length, task, seed) in ADAPTERS.items():
        model, _ = wrap(method, "llama", prompt_len=length)
        perturb(model, seed=seed)
        evaluation = {"task": task, "max_length": 64, "max_target_length": 16, "scoring": "rank"}
        paths[name] = save_adapter(model, folder / name, extra={EVALUATION_KEY: evaluation})
    return paths


@pytest.fixture(scope="module")
def rows() -> dict[str, list[dict]]:
    """Task rows without their labels, as a user sends them."""
    out = {}
    for task, fields in FIELDS.items():
        split = "validation"
        out[task] = [{f: r[f] for f in fields} for r in read_jsonl(data_dir() / task / f"{split}.jsonl")[:6]]
    return out


@pytest.fixture(scope="module")
def expected_predictions(adapters, rows, tmp_path_factory) -> dict[str, list[dict]]:
    """What `adept predict` answers for each adapter's rows."""
    folder = tmp_path_factory.mktemp("expected")
    out = {}
    for name, path in adapters.items():
        task = ADAPTERS[name][2]
        source, target = folder / f"{name}.jsonl", folder / f"{name}.out.jsonl"
        source.write_text("".join(json.dumps(row) + "\n" for row in rows[task]))
        result = runner.invoke(app, ["predict", "--adapter", str(path), "--input", str(source), "-o", str(target)])
        assert result.exit_code == 0, result.output
        out[name] = [{k: v for k, v in answer.items() if k != "index"} for answer in read_jsonl(target)]
    return out


def alone_completion(adapter_dir: Path, prompt: str, max_tokens: int) -> str:
    """Greedy text of one adapter on its own (no server, no other rows)."""
    base, tokenizer = stories()
    model = load_adapter(adapter_dir, base=base)
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    out = model.generate(ids, max_new_tokens=max_tokens, do_sample=False, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)[0, ids.shape[1]:].tolist()  # fmt: skip
    if tokenizer.eos_token_id in out:
        out = out[: out.index(tokenizer.eos_token_id)]
    return tokenizer.decode(out, skip_special_tokens=True)


@pytest.fixture(scope="module")
def expected_completions(adapters) -> dict[tuple[str, str], str]:
    return {(name, p): alone_completion(path, p, 10) for name, path in adapters.items() for p in PROMPTS}


class Server:
    """`adept serve` in a subprocess; `url` once it prints that it listens."""

    def __init__(self, *args: str):
        env = {**os.environ, "COLUMNS": "400"}
        command = [sys.executable, "-m", "adept_cli", "serve", "--port", "0", *args]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.lines: queue.Queue = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.url = self._wait_for_url()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.output.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def _wait_for_url(self) -> str:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                break
            if "listening on " in line:
                return line.split("listening on ")[1].split()[0]
        self.stop()
        pytest.fail("adept serve did not start:\n" + "".join(self.output))

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)


@pytest.fixture(scope="module")
def server(adapters):
    args = [arg for name, path in adapters.items() for arg in ("--adapter", f"{name}={path}")]
    folder = next(iter(adapters.values())).parent  # every adapter of the tests lies here
    started = Server(
        *args, "--adapter-dir", str(folder), "--max-wait-ms", "30", "--max-batch-size", "64", "--api-key", KEY
    )
    yield started
    assert started.stop() == 0, "".join(started.output)


def batches(server: Server) -> int:
    """How many batches the server's model thread has started."""
    return httpx.get(server.url + "/metrics", params={"format": "json"}, headers=AUTH).json()["batches"]


def call(server: Server, method: str, route: str, **kwargs) -> httpx.Response:
    kwargs.setdefault("headers", AUTH)
    return httpx.request(method, server.url + route, timeout=60, **kwargs)


def test_the_openai_client_lists_models_and_completes(server, adapters, expected_completions) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=server.url + "/v1", api_key=KEY)
    names = [model.id for model in client.models.list().data]
    assert names == [model_path(STORIES), *ADAPTERS]

    for name in ADAPTERS:
        done = client.completions.create(model=name, prompt=PROMPTS, max_tokens=10, temperature=0)
        assert [choice.text for choice in done.choices] == [expected_completions[(name, p)] for p in PROMPTS]
        assert [choice.index for choice in done.choices] == list(range(len(PROMPTS)))
        assert done.usage.completion_tokens <= 10 * len(PROMPTS)

    # streaming: the pieces join to the same text; the last event of the row says why it ended
    pieces, reasons = [], []
    for chunk in client.completions.create(model="rte-adept", prompt=PROMPTS[0], max_tokens=10, temperature=0,
                                           stream=True):  # fmt: skip
        pieces.append(chunk.choices[0].text)
        reasons.append(chunk.choices[0].finish_reason)
    assert "".join(pieces) == expected_completions[("rte-adept", PROMPTS[0])]
    assert len(pieces) > 2 and reasons[-1] in ("length", "stop") and set(reasons[:-1]) == {None}

    # a stop string ends the text just before it
    full = expected_completions[("sst2-pt", PROMPTS[0])]
    stop = full.split()[2]
    stopped = client.completions.create(model="sst2-pt", prompt=PROMPTS[0], max_tokens=10, temperature=0, stop=[stop])
    assert stopped.choices[0].text == full[: full.index(stop)]
    assert stopped.choices[0].finish_reason == "stop"

    # the base model itself, and seeded sampling that reproduces
    base = client.completions.create(model=model_path(STORIES), prompt=PROMPTS[0], max_tokens=6, temperature=0)
    assert base.choices[0].text and base.choices[0].text != expected_completions[("rte-adept", PROMPTS[0])][:6]
    sampled = [
        client.completions.create(model="mrpc-dept", prompt=PROMPTS[1], max_tokens=12, temperature=1.0, seed=5)
        .choices[0]
        .text
        for _ in range(2)
    ]
    assert sampled[0] == sampled[1]


# Requests among the good ones that once failed their whole batch (temperature 1e-320: 12 of 12 batched with
# it got a 500), or that must fail alone: (body changes, the status they get)
POISONED = [
    ({"temperature": 1e-320}, 200),  # its limit: greedy, the same text as temperature 0
    ({"max_tokens": True}, 422),
    ({"prompt": "a " * 2000}, 400),
    ({"model": "no-such-adapter"}, 404),
    ({"stop": ["x" * 300]}, 400),
]


def test_300_concurrent_mixed_requests_with_poisoned_ones_each_good_one_answers_as_alone(
    server, rows, expected_predictions, expected_completions
) -> None:
    """Four adapters, predictions and completions (greedy and seeded sampling), with a poisoned request
    every 20th: every good request gets 200 and the answer it gets alone, none is lost, no 5xx at all."""
    names = list(ADAPTERS)
    requests = []
    for i in range(300):
        name = names[i % 4]
        task = ADAPTERS[name][2]
        prompt = PROMPTS[i // 4 % len(PROMPTS)]
        body = {"model": name, "prompt": prompt, "max_tokens": 10, "temperature": 0}
        if i % 20 == 19:
            changes, status = POISONED[i // 20 % len(POISONED)]
            requests.append(("poisoned", name, prompt, {**body, **changes}, status))
        elif i % 6 == 5:
            sampled = {**body, "temperature": 0.9, "top_p": 0.9, "seed": i}
            requests.append(("sampled", name, prompt, sampled, 200))
        elif i % 2 == 0:
            row = i // 8 % len(rows[task])
            requests.append(("predict", name, row, {"model": name, "inputs": rows[task][row]}, 200))
        else:
            requests.append(("complete", name, prompt, body, 200))

    async def send(bodies: list[tuple[str, dict]]) -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=300)
        async with httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=300, limits=limits) as client:
            return await asyncio.gather(*(client.post(route, json=body) for route, body in bodies))

    def route(kind: str) -> str:
        return "/v1/predict" if kind == "predict" else "/v1/completions"

    before = call(server, "GET", "/metrics", params={"format": "json"}).json()
    responses = asyncio.run(send([(route(kind), body) for kind, _, _, body, _ in requests]))
    sampled = [(request, response) for request, response in zip(requests, responses) if request[0] == "sampled"]
    alone = [asyncio.run(send([("/v1/completions", request[3])]))[0] for request, _ in sampled]
    assert [r.json()["choices"][0]["text"] for _, r in sampled] == [r.json()["choices"][0]["text"] for r in alone]
    for (kind, name, key, body, status), response in zip(requests, responses):
        assert response.status_code == status, (body, response.text)
        if kind in ("complete", "poisoned") and status == 200:
            assert response.json()["choices"][0]["text"] == expected_completions[(name, key)], name
        elif kind == "predict":
            got, want = response.json()["predictions"][0], expected_predictions[name][key]
            if "text" in want:
                assert got == want, name
            else:
                assert got["label"] == want["label"], name
                assert got["scores"] == pytest.approx(want["scores"], abs=1e-4), name
    after = call(server, "GET", "/metrics", params={"format": "json"}).json()
    answered = sum(status == 200 for *_, status in requests) + len(sampled)  # the sampled ones twice
    assert after["rows"] - before["rows"] == answered  # none lost, none run twice
    assert after["largest_batch"] > 4 and after["mixed_batches"] > before["mixed_batches"]
    assert not any(key.endswith(" 500") or key.endswith(" 503") for key in after["requests"])


BAD = [
    # (method, route, how the body is sent, expected status, words the message must hold)
    ("POST", "/v1/predict", {"content": b"{not json"}, 400, "not valid JSON"),
    ("POST", "/v1/predict", {"json": {"model": "sst2-pt"}}, 422, "inputs: Field required"),
    ("POST", "/v1/predict", {"json": {"model": "sst2-pt", "inputs": 5}}, 422, "inputs"),
    ("POST", "/v1/predict", {"json": {"model": "nope", "inputs": "x"}}, 404, "no adapter named 'nope'"),
    ("POST", "/v1/predict", {"json": {"model": "rte-adept", "inputs": [{"premise": "a"}]}}, 400, "inputs[0]: missing"),
    ("POST", "/v1/predict", {"json": {"model": "sst2-pt", "inputs": []}}, 400, "empty list"),
    ("POST", "/v1/predict", {"json": {"model": model_path(STORIES), "inputs": "x"}}, 400, "needs an adapter"),
    ("POST", "/v1/completions", {"json": {"model": "sst2-pt", "prompt": "a " * 2000}}, 400, "at most 512 positions"),
    ("POST", "/v1/completions", {"json": {"model": "sst2-pt", "prompt": "a", "n": 3}}, 400, "n and best_of"),
    ("POST", "/v1/completions", {"json": {"model": "sst2-pt", "prompt": "a", "max_tokens": 0}}, 422, "max_tokens"),
    ("POST", "/v1/completions", {"json": {"model": "sst2-pt", "prompt": "a", "temperature": -1}}, 422, "temperature"),
    ("POST", "/v1/completions", {"json": {"model": "sst2-pt", "prompt": "a", "bogus": 1}}, 422, "bogus"),
    ("POST", "/v1/completions", {"json": {"model": "sst2-pt", "prompt": "a", "stop": [""]}}, 400, "stop"),
    ("POST", "/v1/completions", {"json": {"model": "sst2-pt", "prompt": "a", "min_tokens": 20}}, 400, "min_tokens"),
    ("POST", "/v1/completions", {"json": {"model": "sst2-pt", "prompt": "a", "stop": ["x" * 300]}}, 400, "stop"),
    ("POST", "/v1/completions", {"json": {"model": "sst2-pt", "prompt": "a", "max_tokens": 10**9}}, 400, "at most 512"),
    ("POST", "/v1/completions", {"json": ["a", "list"]}, 422, "body"),
    ("POST", "/v1/adapters", {"json": {"name": "../x", "path": "/tmp"}}, 422, "name"),
    (
        "POST",
        "/v1/adapters",
        {"json": {"name": "x", "path": "/nonexistent/dir"}},
        403,
        "not a run or adapter directory under",
    ),
    ("POST", "/v1/adapters", {"json": {"name": "x", "path": "/etc"}}, 403, "not a run or adapter directory under"),
    (
        "POST",
        "/v1/adapters",
        {"json": {"name": "x", "path": "../../../etc"}},
        403,
        "not a run or adapter directory under",
    ),
    ("POST", "/v1/adapters", {"json": {"name": "x", "path": "rte-adept", "task": "/tmp/t.yaml"}}, 403, "built-in task"),
    ("DELETE", "/v1/adapters/nope", {}, 404, "no adapter named 'nope'"),
    ("GET", "/v1/nowhere", {}, 404, "Not Found"),
    ("POST", "/v1/predict", {"content": b"x" * (9 * 1024 * 1024)}, 413, "over"),
    ("GET", "/v1/models", {"headers": {}}, 401, "API key"),
    ("GET", "/v1/models", {"headers": {"Authorization": "Bearer wrong"}}, 401, "API key"),
]


@pytest.mark.parametrize("method,route,body,status,words", BAD, ids=[f"{b[1]}-{b[3]}-{i}" for i, b in enumerate(BAD)])
def test_bad_input_gets_a_json_error_and_the_server_goes_on(
    server, rows, expected_predictions, method, route, body, status, words
) -> None:
    response = call(server, method, route, **body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert words in error["message"] and error["type"] and error["code"]
    # still answering, and correctly
    assert httpx.get(server.url + "/health", timeout=10).json()["status"] == "ok"  # no key needed there
    again = call(server, "POST", "/v1/predict", json={"model": "sst2-pt", "inputs": rows["sst2"][0]})
    assert again.json()["predictions"][0]["label"] == expected_predictions["sst2-pt"][0]["label"]


def test_adapters_come_and_go_while_serving(server, adapters, rows, expected_predictions) -> None:
    added = call(server, "POST", "/v1/adapters", json={"name": "again", "path": str(adapters["rte-adept"])})
    assert added.status_code == 201 and added.json()["task"] == "rte"
    answer = call(server, "POST", "/v1/predict", json={"model": "again", "inputs": rows["rte"][2]}).json()
    assert answer["predictions"][0]["label"] == expected_predictions["rte-adept"][2]["label"]
    taken = call(server, "POST", "/v1/adapters", json={"name": "again", "path": str(adapters["sst2-pt"])})
    assert taken.status_code == 409
    # another task for the same adapter
    other = call(server, "POST", "/v1/adapters", json={"name": "as-mrpc", "path": str(adapters["rte-adept"]),
                                                       "task": "mrpc"})  # fmt: skip
    assert other.status_code == 201 and other.json()["task"] == "mrpc"
    assert call(server, "DELETE", "/v1/adapters/again").status_code == 200
    assert call(server, "DELETE", "/v1/adapters/as-mrpc").status_code == 200
    gone = call(server, "POST", "/v1/predict", json={"model": "again", "inputs": rows["rte"][2]})
    assert gone.status_code == 404
    assert [m["id"] for m in call(server, "GET", "/v1/models").json()["data"]][1:] == list(ADAPTERS)


def test_a_client_leaving_mid_stream_stops_its_row_only(server, expected_completions) -> None:
    body = {"model": "mrpc-dept", "prompt": PROMPTS[0], "max_tokens": 400, "temperature": 1.0, "stream": True}
    before = call(server, "GET", "/metrics", params={"format": "json"}).json()["generated_tokens"]
    with httpx.stream("POST", server.url + "/v1/completions", json=body, headers=AUTH, timeout=60) as response:
        events = response.iter_lines()
        assert next(event for event in events if event.startswith("data:"))
    # meanwhile and after, other requests are answered as before
    other = {"model": "rte-adept", "prompt": PROMPTS[0], "max_tokens": 10, "temperature": 0}
    text = call(server, "POST", "/v1/completions", json=other).json()["choices"][0]["text"]
    assert text == expected_completions[("rte-adept", PROMPTS[0])]
    # one model thread: that answer came after the stream's batch had ended and its tokens were counted
    after = call(server, "GET", "/metrics", params={"format": "json"}).json()["generated_tokens"]
    assert after - before < 200, after - before  # the stream stopped long before its 400 tokens


def test_sigterm_finishes_requests_in_flight_then_exits_0(adapters) -> None:
    server = Server("--adapter", f"pt={adapters['sst2-pt']}", "--max-wait-ms", "0")
    body = {"model": "pt", "prompt": PROMPTS[0], "max_tokens": 300, "temperature": 1.0, "seed": 1}
    done: dict = {}
    thread = threading.Thread(target=lambda: done.update(r=httpx.post(server.url + "/v1/completions", json=body,
                                                                      timeout=60)))  # fmt: skip
    thread.start()
    wait_until(lambda: batches(server) >= 1, "the request's batch to start")
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=60) == 0, "".join(server.output)
    thread.join()
    assert done["r"].status_code == 200 and done["r"].json()["choices"][0]["text"]
    assert "stopped" in "".join(server.output)
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + "/health", timeout=5)


def test_a_model_call_past_the_shutdown_deadline_ends_the_server_naming_what_it_dropped(adapters) -> None:
    """A forward that outlasts --shutdown-timeout once kept the process alive past 130 s, until SIGKILL:
    now the waiting requests are answered 503 at the deadline and the process exits 1, naming them. The
    call: 512 sampled rows of 400 tokens, nearly two minutes on 2 CPU cores, long past a 1 s deadline."""
    started = Server("--adapter", f"pt={adapters['sst2-pt']}", "--max-batch-size", "1024", "--shutdown-timeout", "1")
    body = {"model": "pt", "prompt": ["Once upon a time"] * 512, "max_tokens": 400, "temperature": 1.0, "top_p": 0.9}
    answers: queue.Queue = queue.Queue()
    threading.Thread(
        target=lambda: answers.put(httpx.post(started.url + "/v1/completions", json=body, timeout=120)), daemon=True
    ).start()
    wait_until(lambda: batches(started) >= 1, "the long batch to start")
    begin = time.monotonic()
    started.process.send_signal(signal.SIGTERM)
    assert started.process.wait(timeout=60) == 1, "".join(started.output)
    assert time.monotonic() - begin < 1 + 10  # the deadline, and a margin for a loaded machine
    answer = answers.get(timeout=30)
    assert answer.status_code == 503 and answer.json()["error"]["code"] == "server_stopping", answer.text
    said = "".join(started.output)
    assert "stopped at the 1 s shutdown deadline" in said and "POST /v1/completions cmpl-" in said, said


def test_a_body_framed_both_by_chunks_and_a_length_is_refused(server) -> None:
    """Transfer-Encoding: chunked with Content-Length: 10 was once read whole, past the body limit
    (100-200 MB, even a 200)."""
    import socket
    from urllib.parse import urlparse

    address = urlparse(server.url)
    body = json.dumps({"model": "sst2-pt", "prompt": "Once", "max_tokens": 2}).encode()
    request = (
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode() + b"\r\n"
        b"Transfer-Encoding: chunked\r\nContent-Length: 10\r\n\r\n" + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
    )
    with socket.create_connection((address.hostname, address.port), timeout=30) as client:
        client.sendall(request)
        reply = client.makefile("rb")
        status = reply.readline().decode()
        headers = dict(line.decode().strip().lower().split(": ", 1) for line in iter(reply.readline, b"\r\n"))
        body = reply.read(int(headers["content-length"])).decode()
    assert status.startswith("HTTP/1.1 400") and "conflicting_framing" in body, (status, body)
    assert call(server, "GET", "/health").status_code == 200


@pytest.mark.parametrize(
    "args,message",
    [
        (["--adapter", "noequals"], "expected NAME=PATH"),
        (["--adapter", "a=/nonexistent"], "is not a directory"),
        (["--adapter", "bad name=/tmp"], "the name may use"),
        (["--max-batch-size", "0", "--model", "x"], "--max-batch-size must be >= 1"),
        ([], "give at least one --adapter"),
        (["--adapter", "a=/tmp", "--task", "b=sst2"], "no --adapter is named 'b'"),
        (["--adapter", "a=/tmp", "--task", "a=nosuch"], "unknown task 'nosuch'"),
        (["--adapter", "a=/tmp", "--port", "0"], "/tmp is neither a run directory"),
    ],
)
def test_bad_options_are_one_line(args, message) -> None:
    result = runner.invoke(app, ["serve", *args])
    assert result.exit_code == 2 and message in result.output, result.output


def test_a_taken_port_is_one_line(adapters) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = runner.invoke(app, ["serve", "--adapter", f"a={adapters['sst2-pt']}", "--port", port])
    assert result.exit_code == 2 and f"cannot listen on 127.0.0.1:{port}" in result.output, result.output


def test_a_huge_prompt_does_not_hold_up_health_checks(server) -> None:
    """Tokenizing runs outside the event loop: /health answers while a 7 MB prompt is being tokenized. The
    prompt goes out on a socket of its own; once the whole body is sent, health checks go on until its
    answer arrives. Were the loop held, one check would wait about as long as the whole request: each
    must take under half of it (and under 1 s where the request is short; a check takes milliseconds on
    an idle machine, a few tenths of a second on a loaded one)."""
    import select
    import socket
    from urllib.parse import urlparse

    address = urlparse(server.url)
    body = json.dumps({"model": "sst2-pt", "prompt": "word " * 1_400_000}).encode()
    head = f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
    head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    waits = []
    with socket.create_connection((address.hostname, address.port), timeout=120) as huge:
        huge.sendall(head.encode() + body)  # returns once the server has taken (nearly) all of it
        sent = time.perf_counter()
        while not select.select([huge], [], [], 0)[0]:  # its answer has not come yet
            start = time.perf_counter()
            assert httpx.get(server.url + "/health", timeout=30).status_code == 200
            waits.append(time.perf_counter() - start)
        answer = huge.recv(256).decode()
        whole = time.perf_counter() - sent
    assert answer.startswith("HTTP/1.1 400") and waits, (answer, waits)  # 400: over the model's positions
    assert max(waits) < max(whole / 2, 1.0), (whole, waits)


def test_connections_that_never_finish_a_request_are_dropped_and_shutdown_is_bounded(adapters) -> None:
    """Idle, slow-header and half-sent-body connections are closed after --request-timeout; SIGTERM with
    such a client connected still ends the server promptly, with status 0."""
    import socket
    from urllib.parse import urlparse

    started = Server("--adapter", f"pt={adapters['sst2-pt']}", "--request-timeout", "1", "--shutdown-timeout", "5")
    address = urlparse(started.url)
    sends = [b"", b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n",  # idle; headers never finished
             b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"model\""]  # fmt: skip
    clients = []
    for data in sends:
        client = socket.create_connection((address.hostname, address.port), timeout=10)
        client.sendall(data)
        clients.append(client)

    def closed_by_the_server(client: socket.socket) -> bool:
        try:
            return client.recv(1024) == b""  # an orderly close
        except ConnectionResetError:
            return True
        except TimeoutError:  # still open after 10 s
            return False

    begin = time.monotonic()
    assert [closed_by_the_server(client) for client in clients] == [True, True, True]
    assert time.monotonic() - begin < 8
    late = socket.create_connection((address.hostname, address.port), timeout=10)
    late.sendall(sends[2])  # a half-sent body held open across SIGTERM
    begin = time.monotonic()
    assert started.stop() == 0, "".join(started.output)
    assert time.monotonic() - begin < 15
    for client in (*clients, late):
        client.close()
