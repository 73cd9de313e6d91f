"""The HTTP API of `adept serve`, in the OpenAI style so existing clients work unchanged.

- `GET /v1/models`: the adapters and the base model itself.
- `POST /v1/completions`: `model` names an adapter (or the base); a prompt string or a list of them;
  `max_tokens`, `temperature`, `top_p`, `stop`, `seed`, `n` = 1; `stream: true` answers with
  server-sent events.
- `POST /v1/predict`: `inputs` (one row of task fields, a string, or a list of them) answered as
  `adept predict` answers them: the label and a probability per label word, or the generated text.
- `POST /v1/adapters` (`name`, `path`, optional `task`) and `DELETE /v1/adapters/NAME` while serving.
- `GET /health` and `GET /metrics` (Prometheus text; `?format=json` for JSON).

Every error is `{"error": {"message", "type", "code"}}`: 400 for a request that cannot be answered as
asked (malformed JSON, a prompt longer than the model takes), 401 without the API key, 404 for an
unknown adapter, 409 for a name already in use, 413 for a body over the limit, 422 for fields of the
wrong shape. An error ends its request only; the server goes on.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from ..errors import AdeptError
from ..prompt.model import AdapterNotFound
from .batcher import Batcher, Job, Metrics
from .engine import Engine, Generated, GenerationRow, RequestError, Sampling, ServedAdapter
from .predict import label_answer

MAX_ROWS_PER_REQUEST = 1024
MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_STOP_CHARS = 256
ADAPTER_NAME = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
ROUTES = ("/health", "/metrics", "/v1/models", "/v1/completions", "/v1/predict", "/v1/adapters")


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    prompt: str | list[str]
    max_tokens: int = Field(16, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    min_tokens: int = Field(0, ge=0)  # vLLM's extension: no end token before this many
    n: int = 1
    stream: bool = False
    # Accepted for compatibility with OpenAI clients; only their neutral values can be honoured.
    best_of: int | None = None
    echo: bool = False
    logprobs: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None
    suffix: str | None = None
    user: str | None = None
    stream_options: dict[str, Any] | None = None

    def unsupported(self) -> str | None:
        if self.n != 1 or self.best_of not in (None, 1):
            return "n and best_of must be 1 (one completion per prompt)"
        if self.echo or self.logprobs is not None or self.suffix is not None:
            return "echo, logprobs and suffix are not supported"
        if self.presence_penalty or self.frequency_penalty or self.logit_bias:
            return "presence_penalty, frequency_penalty and logit_bias are not supported"
        return None

    def sampling(self) -> Sampling:
        if self.min_tokens > self.max_tokens:
            raise RequestError(f"min_tokens ({self.min_tokens}) exceeds max_tokens ({self.max_tokens})", "min_tokens")
        return Sampling(self.temperature, self.top_p, self.seed, self.min_tokens)

    def stops(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > 4 or not all(0 < len(stop) <= MAX_STOP_CHARS for stop in stops):
            raise RequestError(f"stop takes at most 4 strings of 1 to {MAX_STOP_CHARS} characters", "invalid_stop")
        return stops


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    inputs: dict[str, Any] | str | list[dict[str, Any] | str]


class AdapterRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=ADAPTER_NAME)
    path: str
    task: str | None = None


def error_response(status: int, message: str, code: str, kind: str | None = None) -> JSONResponse:
    kind = kind or {401: "authentication_error", 404: "not_found_error", 500: "server_error"}.get(
        status, "invalid_request_error"
    )
    return JSONResponse({"error": {"message": message, "type": kind, "code": code}}, status_code=status)


def _as_rows(value: Any, field: str) -> list:
    rows = value if isinstance(value, list) else [value]
    if not rows:
        raise RequestError(f"{field} is an empty list", "empty_input")
    if len(rows) > MAX_ROWS_PER_REQUEST:
        raise RequestError(f"{field} has {len(rows)} entries; at most {MAX_ROWS_PER_REQUEST} per request", "too_many")
    return rows


def _model_card(name: str, created: int, details: dict[str, Any]) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": "adept", **details}


def _post(loop: asyncio.AbstractEventLoop, events: asyncio.Queue, item: Any) -> None:
    """Hand an event from the model thread to a request's coroutine (which may be gone)."""
    try:
        loop.call_soon_threadsafe(events.put_nowait, item)
    except RuntimeError:  # the event loop has closed: nobody is listening any more
        pass


def create_app(engine: Engine, batcher: Batcher, api_key: str | None = None) -> FastAPI:
    metrics: Metrics = batcher.metrics
    started = int(time.time())
    created: dict[str, int] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        try:
            yield
        finally:  # uvicorn has drained the connections: finish what is queued, then stop
            await run_in_threadpool(batcher.stop)

    app = FastAPI(title="adept", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    # -- errors --------------------------------------------------------------------------------------

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = error.errors()
        if any(problem.get("type") == "json_invalid" for problem in problems):
            return error_response(400, "the request body is not valid JSON", "invalid_json")
        parts = []
        for problem in problems[:5]:
            where = ".".join(str(part) for part in problem.get("loc", ()) if part != "body") or "body"
            parts.append(f"{where}: {problem.get('msg')}")
        return error_response(422, "; ".join(parts), "invalid_field")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        return error_response(error.status_code, f"{request.method} {request.url.path}: {error.detail}", code)

    @app.exception_handler(AdapterNotFound)
    async def not_found(request: Request, error: AdapterNotFound) -> JSONResponse:
        return error_response(404, str(error), "model_not_found", "invalid_request_error")

    @app.exception_handler(RequestError)
    async def bad_request(request: Request, error: RequestError) -> JSONResponse:
        return error_response(409 if error.code == "adapter_exists" else 400, str(error), error.code)

    @app.exception_handler(AdeptError)
    async def user_error(request: Request, error: AdeptError) -> JSONResponse:
        return error_response(400, str(error), "invalid_request")

    @app.exception_handler(Exception)
    async def internal(request: Request, error: Exception) -> JSONResponse:
        return error_response(500, f"internal error: {type(error).__name__}: {error}", "internal_error")

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable) -> Any:
        path = request.url.path
        route = path if path in ROUTES else ("/v1/adapters/{name}" if path.startswith("/v1/adapters/") else "other")
        response = _refusal(request, path)
        if response is None:
            _read_body_as_json(request)
            response = await call_next(request)
        metrics.count_request(route, response.status_code)
        return response

    def _refusal(request: Request, path: str) -> JSONResponse | None:
        if api_key and path != "/health":
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                return error_response(
                    401, "missing or wrong API key (send Authorization: Bearer KEY)", "invalid_api_key"
                )
        length = request.headers.get("content-length", "0")
        if not length.isdigit() or int(length) > MAX_BODY_BYTES:
            return error_response(413, f"the request body is over {MAX_BODY_BYTES} bytes", "body_too_large")
        return None

    def _read_body_as_json(request: Request) -> None:
        # Every body here is JSON; `curl -d` labels it a form, which FastAPI would not parse.
        headers = [(key, value) for key, value in request.scope["headers"] if key != b"content-type"]
        request.scope["headers"] = [*headers, (b"content-type", b"application/json")]

    # -- information ----------------------------------------------------------------------------------

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": engine.model_name, "adapters": len(engine.adapters)}

    @app.get("/metrics")
    async def metrics_route(format: str = "prometheus") -> Any:
        if format == "json":
            return metrics.snapshot()
        return PlainTextResponse(metrics.prometheus(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        data = [_model_card(engine.model_name, started, {"method": "base", "task": None, "prompt_len": 0})]
        for name, served in list(engine.adapters.items()):
            data.append(_model_card(name, created.get(name, started), served.describe()))
        return {"object": "list", "data": data}

    # -- adapters -------------------------------------------------------------------------------------

    @app.post("/v1/adapters", status_code=201)
    async def add_adapter(body: AdapterRequest) -> dict[str, Any]:
        if body.name == engine.model_name:
            raise RequestError(f"{body.name!r} is the base model's name; choose another", "adapter_exists")
        served: ServedAdapter = await run_in_threadpool(engine.add, body.name, body.path, body.task)
        created[body.name] = int(time.time())
        return _model_card(body.name, created[body.name], served.describe())

    @app.delete("/v1/adapters/{name}")
    async def remove_adapter(name: str) -> dict[str, Any]:
        await run_in_threadpool(engine.remove, name)
        created.pop(name, None)
        return {"id": name, "object": "model", "deleted": True}

    # -- work -----------------------------------------------------------------------------------------

    @app.post("/v1/predict")
    async def predict(body: PredictRequest) -> dict[str, Any]:
        adapter = engine.resolve(body.model)
        if adapter is None:
            raise RequestError("/v1/predict needs an adapter with a task; the base model has none", "no_task")
        queries = []
        for index, row in enumerate(_as_rows(body.inputs, "inputs")):
            try:
                queries.append(engine.task_query(adapter, row))
            except RequestError as error:
                raise RequestError(f"inputs[{index}]: {error}", error.code) from None
        if engine.predict_kind(adapter) == "classification":
            words = list(engine.get(adapter).task.label_words)
            jobs = [Job(adapter, score=(query, words)) for query in queries]
            scores = await _results([batcher.submit(job) for job in jobs])
            predictions = [label_answer(words, row) for row in scores]
        else:
            rows = [engine.predict_generation_row(adapter, query) for query in queries]
            generated = await _results(
                [batcher.submit(Job(adapter, generation=row, sampling=Sampling())) for row in rows]
            )
            predictions = [{"text": result.text} for result in generated]
        return {"object": "list", "model": body.model, "predictions": predictions}

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest) -> Any:
        problem = body.unsupported()
        if problem:
            raise RequestError(problem, "unsupported_parameter")
        adapter = engine.resolve(body.model)
        stops = body.stops()
        prompts = _as_rows(body.prompt, "prompt")
        rows = [
            GenerationRow(adapter, engine.prompt_ids(adapter, p, body.max_tokens), body.max_tokens, stops)
            for p in prompts
        ]
        sampling = body.sampling()
        reply = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time())}
        reply["model"] = body.model
        if body.stream:
            return StreamingResponse(_stream(rows, adapter, sampling, reply), media_type="text/event-stream")
        results: list[Generated] = await _results(
            [batcher.submit(Job(adapter, generation=row, sampling=sampling)) for row in rows]
        )
        choices = [_choice(index, result.text, result.finish_reason) for index, result in enumerate(results)]
        prompt_tokens = sum(result.prompt_tokens for result in results)
        completion_tokens = sum(result.completion_tokens for result in results)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}
        usage["total_tokens"] = prompt_tokens + completion_tokens
        return {**reply, "choices": choices, "usage": usage}

    async def _stream(
        rows: list[GenerationRow], adapter: str | None, sampling: Sampling, reply: dict[str, Any]
    ) -> AsyncIterator[str]:
        loop, events = asyncio.get_running_loop(), asyncio.Queue()
        gone = threading.Event()  # the client went away: its rows stop at the next step
        for index, row in enumerate(rows):
            row.on_text = lambda piece, index=index: _post(loop, events, (index, piece, None))
            row.cancelled = gone.is_set
            future = batcher.submit(Job(adapter, generation=row, sampling=sampling))
            future.add_done_callback(lambda done, index=index: _post(loop, events, (index, None, done)))
        try:
            open_rows = len(rows)
            while open_rows:
                index, piece, done = await events.get()
                if done is None:
                    yield _event({**reply, "choices": [_choice(index, piece, None)]})
                    continue
                open_rows -= 1
                if done.exception() is not None:
                    error = done.exception()
                    code = "model_not_found" if isinstance(error, AdapterNotFound) else "internal_error"
                    yield _event({"error": {"message": str(error), "type": "server_error", "code": code}})
                else:
                    yield _event({**reply, "choices": [_choice(index, "", done.result().finish_reason)]})
            yield "data: [DONE]\n\n"
        finally:
            gone.set()

    return app


async def _results(futures: list[Future]) -> list[Any]:
    return list(await asyncio.gather(*(asyncio.wrap_future(future) for future in futures)))


def _choice(index: int, text: str, finish_reason: str | None) -> dict[str, Any]:
    return {"text": text, "index": index, "logprobs": None, "finish_reason": finish_reason}


def _event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload)}\n\n"
