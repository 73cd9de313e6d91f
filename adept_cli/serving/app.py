"""The HTTP API of `adept serve`, in the OpenAI style so existing clients work unchanged. This module
assembles the app (state, error handlers, the key and size guard) around any `ServingEngine`; the routes
are in `routes.py`, the request and error shapes and the engine interface in `protocol.py`.

- `GET /v1/models`: the adapters and the base model itself.
- `POST /v1/completions`: `model` names an adapter (or the base); a prompt string or a list of them;
  `max_tokens`, `temperature`, `top_p`, `stop`, `seed`, `n` = 1; `stream: true` answers with
  server-sent events.
- `POST /v1/predict`: `inputs` (one row of task fields, a string, or a list of them) answered as
  `adept predict` answers them: the label and a probability per label word, or the generated text.
- `POST /v1/adapters` (`name`, `path`, optional `task`: a built-in task) and `DELETE /v1/adapters/NAME`
  while serving; a path must lie inside a folder the server was started with (`--adapter-dir`).
- `GET /health` and `GET /metrics` (Prometheus text; `?format=json` for JSON).

Every error is `{"error": {"message", "type", "code"}}`: 400 for a request that cannot be answered as
asked (malformed JSON, a prompt longer than the model takes), 401 without the API key, 404 for an
unknown adapter, 403 for an adapter path outside the allowed folders, 409 for a name already in use, 411
for a body without Content-Length, 413 for a body over the limit, 422 for fields of the
wrong shape. An error ends its request only; the server goes on.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from . import routes
from .adapter_folders import AdapterFolders
from .metrics import Metrics
from .protocol import HTTP_ERRORS, MAX_BODY_BYTES, RequestError, ServingEngine, error_answer, error_response

ROUTES = ("/health", "/metrics", "/v1/models", "/v1/completions", "/v1/predict", "/v1/adapters")


def create_app(engine: ServingEngine, api_key: str | None = None, adapter_dirs: list[str] | None = None) -> FastAPI:
    """The app serving `engine`. `adapter_dirs`: the folders POST /v1/adapters may load from (none: adding
    over HTTP is off)."""
    app = FastAPI(title="adept", lifespan=_lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine, app.state.adapter_folders = engine, AdapterFolders(adapter_dirs or [])
    app.state.started, app.state.created = int(time.time()), {}  # when each model was added, for /v1/models
    app.state.shutdown_deadline, app.state.dropped = None, []  # see _lifespan
    app.state.abandon = engine.abandon  # server.serve calls it at the shutdown deadline
    for router in (routes.information, routes.adapters, routes.work):
        app.include_router(router)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(HTTPException, _http_error)
    for kind in (RequestError, *HTTP_ERRORS, Exception):
        app.add_exception_handler(kind, _answer)
    app.middleware("http")(_guard(api_key, engine.metrics))
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    engine: ServingEngine = app.state.engine
    engine.start()
    try:
        yield
    finally:  # uvicorn has drained the connections: finish what is queued, within what is left of the
        # shutdown deadline (server.serve sets it when the signal comes), then stop
        deadline = app.state.shutdown_deadline
        left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        app.state.dropped = await run_in_threadpool(engine.stop, left)


async def _answer(request: Request, error: Exception) -> JSONResponse:
    return error_answer(error)


async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
    problems = error.errors()
    if any(problem.get("type") == "json_invalid" for problem in problems):
        return error_response(400, "the request body is not valid JSON", "invalid_json")
    parts = []
    for problem in problems[:5]:
        where = ".".join(str(part) for part in problem.get("loc", ()) if part != "body") or "body"
        parts.append(f"{where}: {problem.get('msg')}")
    return error_response(422, "; ".join(parts), "invalid_field")


async def _http_error(request: Request, error: HTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
    return error_response(error.status_code, f"{request.method} {request.url.path}: {error.detail}", code)


def _guard(api_key: str | None, metrics: Metrics) -> Callable:
    """The middleware every request passes: the API key, the body's framing and size, its count."""

    async def guard(request: Request, call_next: Callable) -> Any:
        path = request.url.path
        route = path if path in ROUTES else ("/v1/adapters/{name}" if path.startswith("/v1/adapters/") else "other")
        response = _refusal(request, path, api_key)
        if response is None:
            _read_body_as_json(request)
            response = await call_next(request)
        metrics.count_request(route, response.status_code)
        return response

    return guard


def _refusal(request: Request, path: str, api_key: str | None) -> JSONResponse | None:
    if api_key and path != "/health" and not _bearer_matches(request.headers.get("authorization", ""), api_key):
        return error_response(401, "missing or wrong API key (send Authorization: Bearer KEY)", "invalid_api_key")
    length = request.headers.get("content-length")
    if "transfer-encoding" in request.headers:
        # a chunked body has no length to check before it is read, and one that also states a
        # Content-Length is framed by the chunks, not by it (RFC 9112 6.3): refused either way
        if length is not None:
            return error_response(
                400, "a request may not give both Transfer-Encoding and Content-Length", "conflicting_framing"
            )
        return error_response(
            411, "send the body with a Content-Length header (chunked bodies are not accepted)", "length_required"
        )
    if length is None and request.method in ("POST", "PUT", "PATCH"):
        return error_response(411, "send the body with a Content-Length header", "length_required")
    length = length or "0"
    if not length.isdigit() or int(length) > MAX_BODY_BYTES:
        return error_response(413, f"the request body is over {MAX_BODY_BYTES} bytes", "body_too_large")
    return None


def _read_body_as_json(request: Request) -> None:
    # Every body here is JSON; `curl -d` labels it a form, which FastAPI would not parse.
    headers = [(key, value) for key, value in request.scope["headers"] if key != b"content-type"]
    request.scope["headers"] = [*headers, (b"content-type", b"application/json")]


def _bearer_matches(header: str, key: str) -> bool:
    """`Authorization: Bearer KEY`, the scheme in any case (RFC 9110 11.1), the key compared in constant time."""
    scheme, _, given = header.strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), key.encode())
