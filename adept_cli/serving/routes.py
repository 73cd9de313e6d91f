"""The routes of `adept serve`, at module level: each reads the engine (any `protocol.ServingEngine`)
and the server's bookkeeping from `request.app.state` (set by `app.create_app`), and asks the engine
only what the interface offers."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import Future
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse, StreamingResponse

from ..predicting import label_answer
from ..prompt.model import AdapterNotFound
from ..tasks import is_task_file
from .adapter_folders import AdapterFolders
from .protocol import (
    MAX_ROWS_PER_REQUEST,
    AdapterRequest,
    CompletionRequest,
    Generated,
    GenerationRow,
    Job,
    PredictRequest,
    RequestError,
    Sampling,
    ServedAdapter,
    ServingEngine,
)

information = APIRouter()
adapters = APIRouter()
work = APIRouter()


def _engine(request: Request) -> ServingEngine:
    return request.app.state.engine


# -- information ------------------------------------------------------------------------------------


@information.get("/health")
async def health(request: Request) -> dict[str, Any]:
    engine = _engine(request)
    return {"status": "ok", "model": engine.model_name, "adapters": len(engine.adapters)}


@information.get("/metrics")
async def metrics(request: Request, format: str = "prometheus") -> Any:
    counted = _engine(request).metrics
    if format == "json":
        return counted.snapshot()
    return PlainTextResponse(counted.prometheus(), media_type="text/plain; version=0.0.4")


@information.get("/v1/models")
async def models(request: Request) -> dict[str, Any]:
    engine, state = _engine(request), request.app.state
    await run_in_threadpool(engine.refresh)  # adapters added to (or gone from) the served folders
    data = [_model_card(engine.model_name, state.started, {"method": "base", "task": None, "prompt_len": 0})]
    for name, served in list(engine.adapters.items()):
        data.append(_model_card(name, state.created.get(name, state.started), served.describe()))
    return {"object": "list", "data": data}


def _model_card(name: str, created: int, details: dict[str, Any]) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": "adept", **details}


# -- adapters ----------------------------------------------------------------------------------------


@adapters.post("/v1/adapters", status_code=201)
async def add_adapter(request: Request, body: AdapterRequest) -> dict[str, Any]:
    engine, created = _engine(request), request.app.state.created
    if body.name == engine.model_name:
        raise RequestError(f"{body.name!r} is the base model's name; choose another", "adapter_exists")
    folders: AdapterFolders = request.app.state.adapter_folders
    path = await run_in_threadpool(folders.resolve, body.path)
    if body.task is not None and is_task_file(body.task):
        raise RequestError(
            f'"task" names a built-in task over HTTP; got {body.task!r}. A task file is given at start '
            "(adept serve --task NAME=FILE) or recorded by the adapter",
            "task_not_allowed",
            403,
        )
    served: ServedAdapter = await run_in_threadpool(engine.add, body.name, path, body.task, folders.allows)
    created[body.name] = int(time.time())
    return _model_card(body.name, created[body.name], served.describe())


@adapters.delete("/v1/adapters/{name}")
async def remove_adapter(request: Request, name: str) -> dict[str, Any]:
    await run_in_threadpool(_engine(request).remove, name)
    request.app.state.created.pop(name, None)
    return {"id": name, "object": "model", "deleted": True}


# -- work --------------------------------------------------------------------------------------------


@work.post("/v1/predict")
async def predict(request: Request, body: PredictRequest) -> dict[str, Any]:
    engine = _engine(request)
    adapter = await run_in_threadpool(engine.resolve, body.model)  # may look in the served folders
    if adapter is None:
        raise RequestError("/v1/predict needs an adapter with a task; the base model has none", "no_task")
    queries = await run_in_threadpool(_task_queries, engine, adapter, _as_rows(body.inputs, "inputs"))
    label = f"POST /v1/predict pred-{uuid.uuid4().hex[:12]} ({body.model})"
    if engine.predict_kind(adapter) == "classification":
        words = list(engine.get(adapter).task.label_words)
        jobs = [Job(adapter, score=(query, words), request=label) for query in queries]
        scores = await _results([engine.submit(job) for job in jobs])
        predictions = [label_answer(words, row) for row in scores]
    else:
        rows = await run_in_threadpool(lambda: [engine.predict_generation_row(adapter, q) for q in queries])
        jobs = [Job(adapter, generation=row, sampling=Sampling(), request=label) for row in rows]
        generated = await _results([engine.submit(job) for job in jobs])
        predictions = [{"text": result.text} for result in generated]
    return {"object": "list", "model": body.model, "predictions": predictions}


@work.post("/v1/completions")
async def completions(request: Request, body: CompletionRequest) -> Any:
    engine = _engine(request)
    problem = body.unsupported()
    if problem:
        raise RequestError(problem, "unsupported_parameter")
    adapter = await run_in_threadpool(engine.resolve, body.model)  # may look in the served folders
    stops = body.stops()
    prompts = _as_rows(body.prompt, "prompt")
    # tokenizing runs in a worker thread: a long prompt must not hold up the event loop (and /health)
    rows = await run_in_threadpool(
        lambda: [GenerationRow(adapter, engine.prompt_ids(adapter, p, body.max_tokens), body.max_tokens, stops)
                 for p in prompts]
    )  # fmt: skip
    sampling = body.sampling()
    reply = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time())}
    reply["model"] = body.model
    if body.stream:
        return StreamingResponse(_stream(engine, rows, adapter, sampling, reply), media_type="text/event-stream")
    label = f"POST /v1/completions {reply['id']} ({body.model})"
    results: list[Generated] = await _results(
        [engine.submit(Job(adapter, generation=row, sampling=sampling, request=label)) for row in rows]
    )
    choices = [_choice(index, result.text, result.finish_reason) for index, result in enumerate(results)]
    prompt_tokens = sum(result.prompt_tokens for result in results)
    completion_tokens = sum(result.completion_tokens for result in results)
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}
    usage["total_tokens"] = prompt_tokens + completion_tokens
    return {**reply, "choices": choices, "usage": usage}


async def _stream(
    engine: ServingEngine, rows: list[GenerationRow], adapter: str | None, sampling: Sampling, reply: dict[str, Any]
) -> AsyncIterator[str]:
    loop, events = asyncio.get_running_loop(), asyncio.Queue()
    label = f"POST /v1/completions {reply['id']} ({reply['model']}, streamed)"
    gone = threading.Event()  # the client went away: its rows stop at the next step
    for index, row in enumerate(rows):
        row.on_text = lambda piece, index=index: _post(loop, events, (index, piece, None))
        row.cancelled = gone.is_set
        future = engine.submit(Job(adapter, generation=row, sampling=sampling, request=label))
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
                code = error.code if isinstance(error, RequestError) else code  # e.g. a damaged adapter
                yield _event({"error": {"message": str(error), "type": "server_error", "code": code}})
            else:
                yield _event({**reply, "choices": [_choice(index, "", done.result().finish_reason)]})
        yield "data: [DONE]\n\n"
    finally:
        gone.set()


def _task_queries(engine: ServingEngine, adapter: str, rows: list) -> list:
    queries = []
    for index, row in enumerate(rows):
        try:
            queries.append(engine.task_query(adapter, row))
        except RequestError as error:
            raise RequestError(f"inputs[{index}]: {error}", error.code) from None
    return queries


def _as_rows(value: Any, field: str) -> list:
    rows = value if isinstance(value, list) else [value]
    if not rows:
        raise RequestError(f"{field} is an empty list", "empty_input")
    if len(rows) > MAX_ROWS_PER_REQUEST:
        raise RequestError(f"{field} has {len(rows)} entries; at most {MAX_ROWS_PER_REQUEST} per request", "too_many")
    return rows


def _post(loop: asyncio.AbstractEventLoop, events: asyncio.Queue, item: Any) -> None:
    """Hand an event from the model thread to a request's coroutine (which may be gone)."""
    try:
        loop.call_soon_threadsafe(events.put_nowait, item)
    except RuntimeError:  # the event loop has closed: nobody is listening any more
        pass


async def _results(futures: list[Future]) -> list[Any]:
    return list(await asyncio.gather(*(asyncio.wrap_future(future) for future in futures)))


def _choice(index: int, text: str, finish_reason: str | None) -> dict[str, Any]:
    return {"text": text, "index": index, "logprobs": None, "finish_reason": finish_reason}


def _event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload)}\n\n"
