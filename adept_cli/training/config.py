"""The training config: one flat dataclass, filled from defaults < recipe YAML < command-line `key=value`.

Unknown keys are errors (with the closest known key suggested), values are coerced to the field's type,
and `validate` reports every problem at once.
"""

from __future__ import annotations

import difflib
import os
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ..errors import AdeptError
from ..files import read_yaml
from ..models import DEFAULT_MODEL

METHODS = ("adept", "dept", "pt", "lora", "full")
PROMPT_METHODS = ("adept", "dept", "pt")
MIXED_PRECISION = ("no", "bf16", "fp16")
MODEL_DTYPES = ("float32", "bfloat16", "float16")
SCORINGS = ("generate", "rank")


class TrainConfigError(AdeptError, ValueError):
    """A training setting is unknown, mistyped or out of range; the message lists every problem."""


def _f(default: Any, help: str, **kwargs: Any) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kwargs)
    return field(default=default, metadata={"help": help}, **kwargs)


@dataclass
class TrainConfig:
    # -- what ------------------------------------------------------------------------------------
    model: str = _f(DEFAULT_MODEL, "hub id, local directory, .gguf file or embedded name of the frozen base model")
    task: str = _f("sst2", "built-in task name or task YAML file")
    method: str = _f("adept", "adept | dept | pt | lora | full")
    output_dir: str | None = _f(None, "run directory (default: runs/<task>-<method>)")
    data_dir: str | None = _f(None, "folder with <task>/<split> files (default: $ADEPT_DATA_DIR or ../shared/data)")
    split_seed: int = _f(42, "seed of the shuffle behind the validation / test split rule")
    model_dtype: str = _f("float32", "dtype of the frozen base weights: float32 | bfloat16 | float16")

    # -- method ----------------------------------------------------------------------------------
    prompt_len: int | None = _f(None, "soft-prompt length l (default: 100 for pt, 60 for dept / adept)")
    bottleneck: int | None = _f(None, "ADePT hidden size r (default: largest under the budget)")
    rank: int | None = _f(None, "DePT rank r (default: largest under the budget) or LoRA rank (default 16)")
    budget: int | None = _f(None, "trainable-parameter budget for unset sizes (default: 100 x model width)")
    prompt_init: str = _f("vocab", "soft-prompt init: vocab | text | random")
    prompt_init_text: str | None = _f(None, "text for prompt_init=text")
    dropout: float = _f(0.0, "ADePT: dropout on the offset network's hidden layer")
    lora_alpha: int = _f(32, "LoRA scaling alpha")
    lora_dropout: float = _f(0.05, "LoRA dropout")
    lora_target_modules: list[str] | None = _f(None, "LoRA target modules (default: PEFT's choice for the model)")

    # -- data ------------------------------------------------------------------------------------
    max_length: int | None = _f(None, "maximum input tokens, also DePT's s (default: the task's, 256 for most)")
    max_target_length: int = _f(128, "maximum target tokens")
    train_limit: int | None = _f(None, "use only the first N training examples (after the split rule)")
    validation_limit: int | None = _f(None, "use only the first N validation examples")
    test_limit: int | None = _f(None, "use only the first N test examples")

    # -- optimisation ----------------------------------------------------------------------------
    steps: int = _f(30_000, "optimizer steps")
    epochs: float | None = _f(None, "if set, steps = ceil(epochs x training examples / batch_size)")
    batch_size: int = _f(32, "examples per optimizer step, over all processes and accumulation steps")
    grad_accum: int = _f(1, "gradient accumulation steps per optimizer step")
    lr_prompt: float = _f(3e-1, "learning rate of the soft prompt")
    lr_offsets: float = _f(1e-4, "learning rate of the offset network (DePT's A, B; ADePT's FFN)")
    lr: float = _f(1e-4, "learning rate for lora and full fine-tuning")
    weight_decay: float = _f(0.01, "AdamW weight decay (applied to every trainable tensor)")
    adam_eps: float = _f(1e-6, "AdamW epsilon")
    adam_betas: list[float] = _f([0.9, 0.98], "AdamW betas")
    warmup_steps: int = _f(500, "linear warmup steps, then linear decay to 0")
    max_grad_norm: float | None = _f(1.0, "gradient clipping norm (null: no clipping)")
    mixed_precision: str = _f("no", "no | bf16 | fp16 (fp16 needs a GPU)")
    seed: int = _f(42, "seed of init, data order and dropout")

    # -- evaluation, checkpoints, logging ---------------------------------------------------------
    eval_every: int = _f(1000, "evaluate on the validation split every N steps (and at the end)")
    eval_batch_size: int = _f(32, "examples per evaluation batch, per process")
    scoring: str = _f("generate", "classification scoring: generate (string match, as the paper) | rank")
    checkpoint_every: int | None = _f(None, "write a resumable checkpoint every N steps (default: eval_every)")
    keep_checkpoints: int = _f(2, "how many recent checkpoints to keep")
    log_every: int = _f(10, "log loss, learning rates and tokens/s every N steps")
    tensorboard: bool = _f(False, "also log to TensorBoard in <run>/tensorboard (needs the tensorboard package)")
    save_predictions: bool = _f(False, "write the test predictions to <run>/predictions.jsonl")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def uses_prompt(self) -> bool:
        return self.method in PROMPT_METHODS

    def resolved_output_dir(self) -> Path:
        return Path(self.output_dir or f"runs/{Path(self.task).stem}-{self.method}")


FIELDS = {f.name: f for f in fields(TrainConfig)}


def field_help() -> dict[str, str]:
    return {name: f.metadata["help"] for name, f in FIELDS.items()}


def _unknown_key_message(key: str, where: str) -> str:
    close = difflib.get_close_matches(key, FIELDS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{where}: unknown key {key!r}{hint}"


def coerce(name: str, value: Any, where: str) -> Any:
    """`value` as the type of field `name` (YAML reads 1e-4 as a string; the command line gives strings)."""
    kind = typing.get_type_hints(TrainConfig)[name]
    optional = type(None) in typing.get_args(kind)
    if optional:
        kind = next(t for t in typing.get_args(kind) if t is not type(None))
    if isinstance(value, str) and value.strip().lower() in ("null", "none", "~", ""):
        if optional:
            return None
        raise TrainConfigError(f"{where}: {name} cannot be empty")
    if value is None:
        if optional:
            return None
        raise TrainConfigError(f"{where}: {name} cannot be null")
    try:
        return _coerce_to(kind, value)
    except (TypeError, ValueError):
        raise TrainConfigError(f"{where}: {name} must be {_type_name(kind)}; got {value!r}") from None


def _coerce_to(kind: Any, value: Any) -> Any:
    origin = typing.get_origin(kind)
    if origin is list:
        (item,) = typing.get_args(kind)
        if isinstance(value, str):
            parsed = yaml.safe_load(value) if value.strip().startswith("[") else value.split(",")
            value = parsed
        if not isinstance(value, (list, tuple)):
            raise TypeError
        return [_coerce_to(item, v.strip() if isinstance(v, str) else v) for v in value]
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.strip().lower() in ("true", "yes", "1", "on")
        raise ValueError
    if kind is int:
        if isinstance(value, bool):
            raise TypeError
        number = float(value) if isinstance(value, str) else value
        if isinstance(number, float) and not number.is_integer():
            raise ValueError
        return int(number)
    if kind is float:
        if isinstance(value, bool):
            raise TypeError
        return float(value)
    if kind is str:
        if not isinstance(value, (str, int, float)):
            raise TypeError
        return str(value)
    raise TypeError(f"unsupported field type {kind}")


def _type_name(kind: Any) -> str:
    if typing.get_origin(kind) is list:
        return f"a list of {_type_name(typing.get_args(kind)[0])}"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(kind, str(kind))


def read_recipe(path: str | os.PathLike) -> dict[str, Any]:
    data = read_yaml(path, TrainConfigError, "recipe")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TrainConfigError(f"{path}: a recipe is a mapping of settings, got {type(data).__name__}")
    return data


def parse_overrides(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise TrainConfigError(f"override {item!r} is not key=value (e.g. steps=200)")
        out[key.strip().replace("-", "_")] = value
    return out


def build_config(
    recipe: str | os.PathLike | None = None,
    options: dict[str, Any] | None = None,
    overrides: list[str] | None = None,
) -> TrainConfig:
    """Defaults < recipe < command-line options < key=value overrides; then validated."""
    values: dict[str, Any] = {}
    problems: list[str] = []
    layers = []
    if recipe is not None:
        layers.append((str(recipe), read_recipe(recipe)))
    layers.append(("command-line option", {k: v for k, v in (options or {}).items() if v is not None}))
    layers.append(("override", parse_overrides(overrides or [])))
    for where, layer in layers:
        for key, value in layer.items():
            if key not in FIELDS:
                problems.append(_unknown_key_message(key, where))
                continue
            try:
                values[key] = coerce(key, value, where)
            except TrainConfigError as error:
                problems.append(str(error))
    config = TrainConfig(**values)
    problems += config_problems(config)
    if problems:
        raise TrainConfigError("; ".join(problems))
    return config


def config_problems(config: TrainConfig) -> list[str]:
    """Every range / consistency problem of a config, without loading any model or data."""
    problems = []

    def positive(name: str, minimum: float = 1) -> None:
        value = getattr(config, name)
        if value is not None and value < minimum:
            problems.append(f"{name} must be >= {minimum}; got {value}")

    for name, choices in (
        ("method", METHODS),
        ("mixed_precision", MIXED_PRECISION),
        ("model_dtype", MODEL_DTYPES),
        ("scoring", SCORINGS),
        ("prompt_init", ("vocab", "text", "random")),
    ):
        if getattr(config, name) not in choices:
            problems.append(f"{name} must be one of {', '.join(choices)}; got {getattr(config, name)!r}")
    for name in (
        "steps",
        "batch_size",
        "grad_accum",
        "eval_every",
        "eval_batch_size",
        "log_every",
        "keep_checkpoints",
        "max_target_length",
        "max_length",
        "train_limit",
        "validation_limit",
        "test_limit",
        "checkpoint_every",
        "bottleneck",
        "rank",
        "budget",
    ):
        positive(name)
    positive("prompt_len", 0)
    positive("warmup_steps", 0)
    for name in ("lr_prompt", "lr_offsets", "lr", "adam_eps"):
        if getattr(config, name) <= 0:
            problems.append(f"{name} must be > 0; got {getattr(config, name)}")
    for name in ("weight_decay", "dropout", "lora_dropout"):
        if getattr(config, name) < 0:
            problems.append(f"{name} must be >= 0; got {getattr(config, name)}")
    if not 0 <= config.dropout < 1 or not 0 <= config.lora_dropout < 1:
        problems.append("dropout and lora_dropout must be in [0, 1)")
    if len(config.adam_betas) != 2 or not all(0 <= b < 1 for b in config.adam_betas):
        problems.append(f"adam_betas must be two numbers in [0, 1); got {config.adam_betas}")
    if config.max_grad_norm is not None and config.max_grad_norm <= 0:
        problems.append(f"max_grad_norm must be > 0 or null; got {config.max_grad_norm}")
    if config.epochs is not None and config.epochs <= 0:
        problems.append(f"epochs must be > 0; got {config.epochs}")
    if config.batch_size % config.grad_accum:
        problems.append(f"batch_size {config.batch_size} is not divisible by grad_accum {config.grad_accum}")
    if config.method == "pt" and config.prompt_len == 0:
        problems.append("prompt_len must be >= 1 for pt")
    if config.prompt_init == "text" and not config.prompt_init_text:
        problems.append("prompt_init=text needs prompt_init_text")
    if config.method == "pt" and config.bottleneck is not None:
        problems.append("bottleneck applies to adept only")
    return problems


def validate(config: TrainConfig) -> None:
    problems = config_problems(config)
    if problems:
        raise TrainConfigError("; ".join(problems))


def method_settings(config: TrainConfig) -> dict[str, Any]:
    """Settings of the prompt method config (`adept_cli.methods`) from a training config."""
    settings: dict[str, Any] = {
        "prompt_init": config.prompt_init,
        "prompt_init_text": config.prompt_init_text,
        "budget": config.budget,
    }
    default_len = 100 if config.method == "pt" else 60
    settings["prompt_len"] = default_len if config.prompt_len is None else config.prompt_len
    if config.method == "adept":
        settings.update(bottleneck=config.bottleneck, dropout=config.dropout)
    elif config.method == "dept":
        settings.update(rank=config.rank)
    return settings


def dump_config(config: TrainConfig) -> str:
    header = "# Resolved config of this run (defaults < recipe < command line).\n"
    header += "# Continue it: adept train --resume auto --output-dir <this run's directory>\n"
    return header + yaml.safe_dump(config.to_dict(), sort_keys=False)


def load_run_config(path: str | os.PathLike) -> TrainConfig:
    """The resolved config saved in a run directory."""
    return build_config(recipe=path)
