"""The HTTP API's shapes: request bodies (pydantic models, unknown fields refused), the error body
`{"error": {"message", "type", "code"}}`, and the limits every request is held to."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, Strict, model_validator

from .engine import RequestError, Sampling

MAX_ROWS_PER_REQUEST = 1024
MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_STOP_CHARS = 256
ADAPTER_NAME = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
ROUTES = ("/health", "/metrics", "/v1/models", "/v1/completions", "/v1/predict", "/v1/adapters")


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


def error_response(status: int, message: str, code: str, kind: str | None = None) -> JSONResponse:
    kind = kind or {401: "authentication_error", 404: "not_found_error", 500: "server_error"}.get(
        status, "invalid_request_error"
    )
    return JSONResponse({"error": {"message": message, "type": kind, "code": code}}, status_code=status)
