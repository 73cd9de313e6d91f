"""Configuration of the three prompt-tuning methods: one dataclass each, validated on creation.

Every field has help text (in `metadata["help"]`) so the CLI and the docs can show it. Sizes left as
`None` (the ADePT bottleneck, the DePT rank) are solved at attach time as the largest that fits the
parameter budget, which defaults to vanilla prompt tuning with 100 tokens (100 x model width).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

from ..errors import AdeptError

PROMPT_INITS = ("vocab", "text", "random")
SHARE_PROMPT = ("auto", "on", "off")  # PromptTunedModel(share_prompt=...): see prompt/sharing.py


class ConfigError(AdeptError, ValueError):
    """A method setting is out of range or inconsistent; the message names the setting."""


def _help(text: str, **kwargs: Any) -> Any:
    return field(metadata={"help": text}, **kwargs)


@dataclass
class MethodConfig:
    """Settings shared by every method: the soft prompt."""

    method: ClassVar[str] = ""

    prompt_len: int = _help("number of soft-prompt tokens l prepended to the (encoder) input", default=100)
    prompt_init: str = _help(
        "soft-prompt init: 'vocab' (rows of frequent vocabulary tokens), 'text' (embeddings of "
        "prompt_init_text, repeated to length l) or 'random' (normal, scaled to the embedding table)",
        default="vocab",
    )
    prompt_init_text: str | None = _help("text whose token embeddings initialise the prompt", default=None)
    budget: int | None = _help(
        "trainable-parameter budget used to solve sizes left unset (default: 100 x model width)", default=None
    )

    def __post_init__(self) -> None:
        _require_int("prompt_len", self.prompt_len, minimum=0)
        if self.prompt_init not in PROMPT_INITS:
            raise ConfigError(f"prompt_init must be one of {', '.join(PROMPT_INITS)}; got {self.prompt_init!r}")
        if self.prompt_init == "text" and not self.prompt_init_text:
            raise ConfigError("prompt_init='text' needs prompt_init_text (the text to initialise the prompt from)")
        if self.budget is not None:
            _require_int("budget", self.budget, minimum=1)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, **asdict(self)}


@dataclass
class PromptTuningConfig(MethodConfig):
    """Vanilla prompt tuning (Lester et al., 2021): a soft prompt of l tokens, nothing else."""

    method: ClassVar[str] = "pt"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.prompt_len == 0:
            raise ConfigError("prompt_len must be at least 1 for prompt tuning (it is the only trainable part)")


@dataclass
class DeptConfig(MethodConfig):
    """DePT: a short prompt plus position offsets A (s x r) B (r x d) added to the input embeddings."""

    method: ClassVar[str] = "dept"

    prompt_len: int = _help("number of soft-prompt tokens l", default=60)
    rank: int | None = _help("rank r of the position offsets A B (default: largest that fits the budget)", default=None)
    max_length: int = _help(
        "s, the number of input positions with an offset (the maximum input length); "
        "tokens at positions >= s get no offset",
        default=256,
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        _require_int("max_length", self.max_length, minimum=1)
        if self.rank is not None:
            _require_int("rank", self.rank, minimum=1)


@dataclass
class AdeptConfig(MethodConfig):
    """ADePT: a short prompt plus a token-shared feed-forward network whose output offsets each token."""

    method: ClassVar[str] = "adept"

    prompt_len: int = _help("number of soft-prompt tokens l", default=60)
    bottleneck: int | None = _help(
        "hidden size r of the offset network d -> r -> d (default: largest that fits the budget)", default=None
    )
    dropout: float = _help("dropout on the offset network's hidden layer during training", default=0.0)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.bottleneck is not None:
            _require_int("bottleneck", self.bottleneck, minimum=1)
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be a number in [0, 1); got {self.dropout!r}")


METHOD_CONFIGS: dict[str, type[MethodConfig]] = {
    cls.method: cls for cls in (PromptTuningConfig, DeptConfig, AdeptConfig)
}


def method_config(method: str, **settings: Any) -> MethodConfig:
    """Build the config of `method` ('pt', 'dept' or 'adept'); unknown settings are an error."""
    if method not in METHOD_CONFIGS:
        raise ConfigError(f"unknown method {method!r}; expected one of {', '.join(METHOD_CONFIGS)}")
    cls = METHOD_CONFIGS[method]
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ConfigError(
            f"unknown setting(s) for method {method!r}: {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    return cls(**settings)


def config_from_dict(data: dict[str, Any]) -> MethodConfig:
    """Inverse of `MethodConfig.to_dict`."""
    data = dict(data)
    method = data.pop("method", None)
    if method is None:
        raise ConfigError("method config has no 'method' field")
    return method_config(method, **data)


def _require_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}; got {value!r}")
