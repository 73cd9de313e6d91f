"""What every prompt method's config shares: the soft prompt's settings and the checks of a field.

Each method's own config subclasses `MethodConfig` in its file under `methods/` (the only home of that
method's defaults and checks). Every field has help text (in `metadata["help"]`) so the CLI and the docs
can show it. Sizes left as `None` (the ADePT bottleneck, the DePT rank) are solved at attach time as the
largest that fits the parameter budget, which defaults to vanilla prompt tuning with 100 tokens (100 x
model width).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from ..errors import AdeptError

PROMPT_INITS = ("vocab", "text", "random")
# The settings evaluation needs, in a file beside a result that is not an adept adapter (a PEFT adapter,
# a full model); an adept adapter keeps them in its own config.
EVALUATION_FILE = "adept_evaluation.json"
SHARE_PROMPT = ("auto", "on", "off")  # PromptTunedModel(share_prompt=...): see prompt/sharing.py


class ConfigError(AdeptError, ValueError):
    """A method setting is out of range or inconsistent; the message names the setting."""


def help_field(text: str, **kwargs: Any) -> Any:
    return field(metadata={"help": text}, **kwargs)


@dataclass
class MethodConfig:
    """Settings shared by every method: the soft prompt."""

    method: ClassVar[str] = ""

    prompt_len: int = help_field("number of soft-prompt tokens l prepended to the (encoder) input", default=100)
    prompt_init: str = help_field(
        "soft-prompt init: 'vocab' (rows of frequent vocabulary tokens), 'text' (embeddings of "
        "prompt_init_text, repeated to length l) or 'random' (normal, scaled to the embedding table)",
        default="vocab",
    )
    prompt_init_text: str | None = help_field("text whose token embeddings initialise the prompt", default=None)
    budget: int | None = help_field(
        "trainable-parameter budget used to solve sizes left unset (default: 100 x model width)", default=None
    )

    def __post_init__(self) -> None:
        require_int("prompt_len", self.prompt_len, minimum=0)
        if self.prompt_init not in PROMPT_INITS:
            raise ConfigError(f"prompt_init must be one of {', '.join(PROMPT_INITS)}; got {self.prompt_init!r}")
        if self.prompt_init == "text" and not self.prompt_init_text:
            raise ConfigError("prompt_init='text' needs prompt_init_text (the text to initialise the prompt from)")
        if self.budget is not None:
            require_int("budget", self.budget, minimum=1)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, **asdict(self)}


def require_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}; got {value!r}")
