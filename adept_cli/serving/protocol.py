"""What the server and its engines agree on, in one place: the engine interface (`ServingEngine`, which
adept's own engine and the vLLM engine both implement), the work a request hands an engine (`Job`,
`GenerationRow`, `Sampling`) and what comes back (`Generated`, `ServedAdapter`), the HTTP API's request
bodies (pydantic models, unknown fields refused) and limits, and every error with the HTTP answer it
maps to (`HTTP_ERRORS`; bodies `{"error": {"message", "type", "code"}}`)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Protocol

import torch
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, Strict, model_validator

from ..errors import AdeptError
from ..prompt.model import AdapterNotFound

if TYPE_CHECKING:
    from ..encoding import Encoder
    from ..tasks.example import Example
    from ..tasks.spec import Task
    from .metrics import Metrics

MAX_ROWS_PER_REQUEST = 1024
MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_STOP_CHARS = 256
ADAPTER_NAME = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"


class Body(BaseModel):
    """A request body: unknown fields refused, every string valid Unicode (JSON's \\ud800 escapes can
    carry lone surrogates, which no tokenizer takes)."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _text_is_unicode(cls, data: Any) -> Any:
        pending = [data]
        while pending:  # a loop, not recursion: bodies may nest deeply
            value = pending.pop()
            if isinstance(value, str):
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    raise ValueError(
                        "a string holds a lone surrogate (\\ud800-\\udfff without its pair): not valid text"
                    ) from None
            elif isinstance(value, dict):
                pending.extend(value.keys())
                pending.extend(value.values())
            elif isinstance(value, list):
                pending.extend(value)
        return data


# JSON's own types, nothing coerced: `true` is not a count, nor "16" a number (a bool once read as 1)
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]  # an integer is a number too
Bool = Annotated[bool, Strict()]


class CompletionRequest(Body):
    model: str
    prompt: str | list[str]
    max_tokens: Int = Field(16, ge=1)
    temperature: Float = Field(1.0, ge=0.0, le=2.0)
    top_p: Float = Field(1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: Int | None = Field(None, ge=-(2**63) + 1, le=2**63 - 1)  # what a torch generator takes
    min_tokens: Int = Field(0, ge=0)  # vLLM's extension: no end token before this many
    n: Int = 1
    stream: Bool = False
    # Accepted for compatibility with OpenAI clients; only their neutral values can be honoured.
    best_of: Int | None = None
    echo: Bool = False
    logprobs: Int | None = None
    presence_penalty: Float = 0.0
    frequency_penalty: Float = 0.0
    logit_bias: dict[str, Float] | None = None
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


class PredictRequest(Body):
    model: str
    inputs: dict[str, Any] | str | list[dict[str, Any] | str]


class AdapterRequest(Body):
    name: str = Field(pattern=ADAPTER_NAME)
    path: str = Field(min_length=1, max_length=4096)
    task: str | None = Field(default=None, min_length=1, max_length=4096)


# -- errors and the HTTP answers they map to ---------------------------------------------------------------


class RequestError(AdeptError, ValueError):
    """A request the server cannot answer as asked (HTTP 400); the message says why."""

    def __init__(self, message: str, code: str = "invalid_request", status: int = 400):
        super().__init__(message)
        self.code = code
        self.status = 409 if code == "adapter_exists" else status


class AdapterOutsideFolders(RequestError):
    """A path that is not an adapter under the folders the server allows (HTTP 403). The message is the
    same whether or not the path exists, so a client learns nothing about the rest of the machine."""

    def __init__(self, path: str):
        super().__init__(
            f"{path!r} is not a run or adapter directory under the folders this server loads adapters from "
            "(adept serve --adapter-dir)",
            "adapter_not_allowed",
            403,
        )


class ServerStopping(AdeptError, RuntimeError):
    """The server's shutdown deadline passed before this request's batch finished."""


# (status, code, type, message) of each error a route may raise (message None: the error's own);
# RequestError carries its own status and code.
HTTP_ERRORS: dict[type[BaseException], tuple[int, str, str | None, str | None]] = {
    AdapterNotFound: (404, "model_not_found", "invalid_request_error", None),
    ServerStopping: (503, "server_stopping", "server_error", None),
    RecursionError: (400, "nested_too_deeply", None, "the request body is nested too deeply"),
    AdeptError: (400, "invalid_request", None, None),
}


def error_answer(error: BaseException) -> JSONResponse:
    """The HTTP answer to an error a route raised (500 for one nobody foresaw)."""
    if isinstance(error, RequestError):
        return error_response(error.status, str(error), error.code)
    for kind, (status, code, error_type, message) in HTTP_ERRORS.items():
        if isinstance(error, kind):
            return error_response(status, message or str(error), code, error_type)
    return error_response(500, f"internal error: {type(error).__name__}: {error}", "internal_error")


def error_response(status: int, message: str, code: str, kind: str | None = None) -> JSONResponse:
    kind = kind or {401: "authentication_error", 404: "not_found_error", 500: "server_error"}.get(
        status, "invalid_request_error"
    )
    return JSONResponse({"error": {"message": message, "type": kind, "code": code}}, status_code=status)


# -- the work an engine is handed, and what it answers -------------------------------------------------


@dataclass
class ServedAdapter:
    name: str
    method: str
    source: str  # the run or adapter directory it was loaded from
    prompt_len: int
    task: Task | None  # formats /v1/predict inputs; None: completions only
    encoder: Encoder  # the source / target lengths it was trained with
    lazy: bool = False  # served from a folder: read on request, dropped when others need the room

    def describe(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "task": self.task.name if self.task else None,
            "prompt_len": self.prompt_len,
            "source": self.source,
            "from_folder": self.lazy,
        }


@dataclass(frozen=True)
class Sampling:
    """How one row's next token is chosen. Rows of different samplings share a `generate` call: each is
    applied to its own row (`_RowSampling`)."""

    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int | None = None  # its own random stream: the row's answer does not depend on its company
    min_tokens: int = 0  # no end token before this many new tokens

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def stream(self, private_seed: int, device: Any) -> torch.Generator | None:
        """The random stream a sampled row draws from: its seed, else the row's private one (None: greedy)."""
        if self.greedy:
            return None
        return torch.Generator(device=device).manual_seed(self.seed if self.seed is not None else private_seed)

    def next_token(
        self, scores: torch.Tensor, steps: int, end_ids: Sequence[int], generator: torch.Generator | None
    ) -> int:
        """A row's next token from its vocabulary scores after `steps` tokens: no end token before
        `min_tokens`, then the largest score (greedy) or a draw (`sample`)."""
        if steps < self.min_tokens and end_ids:
            scores = scores.clone()
            scores[list(end_ids)] = float("-inf")
        return int(scores.argmax()) if self.greedy else self.sample(scores, generator)

    def sample(self, logits: torch.Tensor, generator: torch.Generator | None) -> int:
        """A sampled row's next token from its logits, as transformers samples (temperature, then nucleus
        over the sorted probabilities keeping at least one token; no top-k, which OpenAI's sampling lacks)."""
        scaled = logits.float() / self.temperature
        if scaled.isnan().any() or scaled.isposinf().any():
            # a temperature so small (1e-320 is valid) that logits / T overflows: its limit, computed exactly,
            # is to draw among the largest logits (0 after the shift; every other one -inf)
            scaled = (logits.double() - logits.double().max()) / self.temperature
        logits = scaled
        if self.top_p < 1.0:
            ordered, order = logits.sort()
            outside = ordered.softmax(-1).cumsum(-1) <= 1 - self.top_p
            outside[-1] = False
            logits = logits.masked_fill(outside.scatter(0, order, outside), float("-inf"))
        return int(torch.multinomial(logits.softmax(-1), 1, generator=generator))


@dataclass
class GenerationRow:
    adapter: str | None  # None: the base model alone
    input_ids: list[int]
    max_tokens: int
    stop: Sequence[str] = ()
    on_text: Callable[[str], None] | None = None  # each new piece of text, as it is decoded
    cancelled: Callable[[], bool] = lambda: False
    # Text already handed to `on_text`: a row run again (its batch failed for another row's sake) hands
    # out only what comes after it; it is the same text, as every row draws from its own seeded stream.
    sent: str = ""
    # The stream of a sampled row that gave no seed: chosen once, so that running it again draws the same.
    private_seed: int = field(default_factory=lambda: secrets.randbits(63))


class RowsFailed(Exception):
    """Some rows of a `generate` call failed on their own (their sampling, their client's callback); the
    others finished. `results[i]` is row i's result, None where `errors` holds its error."""

    def __init__(self, results: list[Generated | None], errors: dict[int, BaseException]):
        super().__init__(f"{len(errors)} of {len(results)} rows failed: {next(iter(errors.values()))}")
        self.results, self.errors = results, errors


@dataclass
class Generated:
    text: str
    finish_reason: str  # stop | length | cancelled
    prompt_tokens: int
    completion_tokens: int


@dataclass
class Job:
    """One row of work: a scoring row (adapter, source text, candidates) or a generation row."""

    adapter: str | None
    score: tuple[Example | str, Sequence[str]] | None = None  # (input, candidates)
    generation: GenerationRow | None = None
    sampling: Sampling | None = None
    request: str = ""  # the request it belongs to ("POST /v1/completions cmpl-..."), to name it if dropped
    future: Future = field(default_factory=Future)
    enqueued: float = field(default_factory=time.monotonic)

    def group(self) -> str:
        return "score" if self.score is not None else "generate"

    def cancelled(self) -> bool:
        return self.generation is not None and self.generation.cancelled()


class ServingEngine(Protocol):
    """What the HTTP routes ask of an engine: adept's own (`engine.Engine`, batching with
    `batcher.Batcher`) and vLLM's (`vllm_engine.VllmEngine`) both implement it."""

    model_name: str
    adapters: Mapping[str, ServedAdapter]
    metrics: Metrics

    def add(
        self,
        name: str,
        path: str | Path,
        task: str | None = None,
        allowed: Callable[[Path], bool] | None = None,
        lazy: bool = False,
    ) -> ServedAdapter: ...
    def remove(self, name: str) -> None: ...
    def get(self, name: str) -> ServedAdapter: ...
    def resolve(self, name: str) -> str | None: ...
    def refresh(self) -> None: ...
    def prompt_ids(self, adapter: str | None, text: str, max_tokens: int, special_tokens: bool = True) -> list[int]: ...
    def task_query(self, adapter: str, row: dict[str, Any] | str) -> Example: ...
    def predict_kind(self, adapter: str) -> str: ...
    def predict_generation_row(self, adapter: str, query: Example) -> GenerationRow: ...
    def start(self) -> None: ...
    def submit(self, job: Job) -> Future: ...
    def stop(self, timeout: float | None = None) -> list[Job]: ...
    def abandon(self) -> list[Job]: ...
