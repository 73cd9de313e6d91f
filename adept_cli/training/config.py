"""The training config: one flat set of settings, filled from defaults < recipe YAML < command-line `key=value`.

Unknown keys are errors (with the closest known key suggested), values are coerced to the field's type,
and every problem is reported at once. Each method's own settings (`bottleneck`, DePT's `rank`,
`lora_rank`, ...) come from the registry of methods: the built-in ones are fields of `TrainConfig`,
generated from their settings classes; those of a method registered later are kept in `method_options`
and read the same way (`config.setting(name)`, or as an attribute). A setting of one method is an error
on a run of another, never silently ignored. Each prompt method's settings,
defaults and checks are its config class in `adept_cli.prompt.methods`; this module asks the registry
for them and imports neither torch nor transformers.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import typing
from dataclasses import asdict, dataclass, field, fields, make_dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import AdeptError
from ..files import read_yaml
from ..hf import DEFAULT_MODEL, QUANTIZATIONS
from ..prompt.config import SHARE_PROMPT, ConfigError
from ..prompt.methods import (
    get_method,
    method_config,
    method_names,
    setting_names,
    settings_of,
    training_method_names,
)

RUN_FORMAT_VERSION = 1  # of config.yaml; version 0 (no field) is read and upgraded
ENVIRONMENT_KEY = "environment"  # in config.yaml and results.json: versions and facts, not settings
MIXED_PRECISION = ("no", "bf16", "fp16")
MODEL_DTYPES = ("float32", "bfloat16", "float16")
SCORINGS = ("generate", "rank")
MIXES = ("proportional", "equal", "temperature")
NONE_IS_A_CHOICE = ("quantization",)
# Padded tokens per training forward on a CPU unless micro_batch_tokens says otherwise: activations grow
# with the tokens of one forward (about 1.2 MB a token for SmolLM2-135M in fp32), so 32 rows of 256 tokens
# held 14 GB; a GPU keeps its whole micro-batch (more tokens per kernel run faster there).
CPU_FORWARD_TOKENS = 2048
TRACKERS = ("tensorboard", "wandb", "mlflow", "comet_ml", "aim", "clearml", "dvclive", "swanlab", "trackio")


class TrainConfigError(AdeptError, ValueError):
    """A training setting is unknown, mistyped or out of range; the message lists every problem."""


def _f(default: Any, help: str, **kwargs: Any) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kwargs)
    return field(default=default, metadata={"help": help}, **kwargs)


def training_methods() -> tuple[str, ...]:
    return training_method_names()


def fields_of(config_class: type) -> dict[str, Any]:
    return {f.name: f for f in fields(config_class)}


def setting_owners() -> dict[str, list[Any]]:
    """Every method setting of the registry, with the methods it belongs to."""
    owners: dict[str, list[Any]] = {}
    for method in map(get_method, training_method_names()):
        for name in setting_names(method):
            owners.setdefault(name, []).append(method)
    return owners


def method_setting_field(name: str, owners: list[Any]) -> tuple[str, Any, Any]:
    """(name, type, field) of a method's setting as an `adept train` setting: unset by default (the
    method's settings class holds its default), its help the settings class's own, with the methods it
    applies to and their defaults."""
    found = fields_of(owners[0].config_class)[name]
    kind = typing.get_type_hints(owners[0].config_class)[name]
    defaults = {method.name: _default_of(fields_of(method.config_class)[name]) for method in owners}
    shown = ""
    if len(set(map(repr, defaults.values()))) > 1:  # say each method's default where they differ
        shown = " (default: " + ", ".join(f"{value} for {method}" for method, value in defaults.items()) + ")"
    elif "(default" not in found.metadata["help"] and _default_of(found) is not None:
        shown = f" (default {_default_of(found)})"
    optional = kind if type(None) in typing.get_args(kind) else kind | None
    return name, optional, _f(None, f"{' / '.join(defaults)}: {found.metadata['help']}{shown}")


def _default_of(setting: Any) -> Any:
    return setting.default_factory() if callable(setting.default_factory) else setting.default


@dataclass
class TrainSettings:
    """The settings of every run; `TrainConfig` adds each registered method's own (see the module docstring)."""

    # -- what ------------------------------------------------------------------------------------
    model: str = _f(DEFAULT_MODEL, "hub id, local directory, .gguf file or embedded name of the frozen base model")
    task: str = _f("sst2", "task name or task YAML file; several (a list, or a,b,c): one adapter on a mixture")
    method: str = _f("adept", " | ".join(training_methods()))
    output_dir: str | None = _f(
        None, "run directory (default: runs/<task>-<method>, -<model> added for a base other than the default)"
    )
    data_dir: str | None = _f(
        None, "folder with <task>/<split> files (default: $ADEPT_DATA_DIR or ../shared/data); hub: the hub only"
    )
    split_seed: int = _f(42, "seed of the shuffle behind the validation / test split rule")
    model_dtype: str = _f("float32", "base weights dtype (quantized: compute dtype): float32 | bfloat16 | float16")
    quantization: str = _f(
        "none", "none | 4bit (NF4) | 8bit (LLM.int8): the frozen base's linear layers through bitsandbytes"
    )
    gradient_checkpointing: bool = _f(
        False, "recompute the base's activations in the backward pass: far less activation memory, more time"
    )

    # -- method (each method's own settings: see TrainConfig) -------------------------------------
    share_prompt: str | None = _f(
        None, "pt / dept / adept, causal models: auto (default) | on | off: compute the prompt once per batch"
    )
    init_from: str | None = _f(
        None, "pt / dept / adept: start from this run's (or adapter's) trained prompt and offsets (same sizes)"
    )
    init_from_resize: str | None = _f(
        None, "pt / dept / adept: truncate | repeat: fit an init_from prompt of another length"
    )

    # -- data ------------------------------------------------------------------------------------
    max_length: int | None = _f(None, "maximum input tokens, also DePT's s (default: the task's, 256 for most)")
    max_target_length: int = _f(128, "maximum target tokens")
    chat_template: str | None = _f(
        None, "causal models: auto (the tokenizer's own) | a Jinja file: input as a user turn, target as the answer"
    )
    train_limit: int | None = _f(None, "use only the first N training examples (after the split rule)")
    mix: str = _f("proportional", "several tasks: proportional | equal | temperature: how often each task is sampled")
    mix_temperature: float = _f(2.0, "mix=temperature: task i is sampled in proportion to n_i ** (1 / T)")
    mix_cap: int | None = _f(None, "several tasks: count at most N examples of a task when mixing (T5's cap)")
    k_shot: int | None = _f(
        None, "train on K examples per class (K in all for other tasks), drawn with split_seed; ids saved in the run"
    )
    validation_limit: int | None = _f(None, "use only the first N validation examples")
    test_limit: int | None = _f(None, "use only the first N test examples")

    # -- optimisation ----------------------------------------------------------------------------
    steps: int = _f(30_000, "optimizer steps")
    epochs: float | None = _f(None, "if set, steps = ceil(epochs x training examples / batch_size)")
    batch_size: int = _f(32, "examples per optimizer step, over all processes and accumulation steps")
    grad_accum: int = _f(1, "gradient accumulation steps per optimizer step")
    micro_batch_tokens: int | None = _f(
        None,
        "split each step's rows, longest first, into forwards of at most N padded tokens (the same gradient, "
        f"less memory and padding; default: {CPU_FORWARD_TOKENS} on a CPU, no split on a GPU)",
    )
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
    report_to: list[str] | None = _f(
        None, "trackers to log to through Accelerate: tensorboard, wandb, mlflow, comet_ml, aim, clearml, dvclive, ..."
    )
    tracker_project: str = _f("adept", "project (W&B) / experiment (MLflow) name of the trackers' runs")
    tensorboard: bool = _f(
        False, "also log to TensorBoard in <run>/tensorboard (shorthand for report_to: [tensorboard])"
    )
    save_predictions: bool = _f(False, "write the test predictions to <run>/predictions.jsonl")
    allow_unsafe_exec: bool = _f(
        False, "code tasks: run generated code unisolated where no sandbox (bubblewrap / unshare) works"
    )

    # The settings of methods registered after this module was imported (name -> value).
    method_options: dict[str, Any] = field(default_factory=dict, metadata={"help": ""})

    def to_dict(self) -> dict[str, Any]:
        settings = asdict(self)
        options = settings.pop("method_options")
        return {**settings, **options}  # one flat mapping, as config.yaml holds it

    def setting(self, name: str) -> Any:
        """A method setting's value (None: unset)."""
        return getattr(self, name, None)

    def __getattr__(self, name: str) -> Any:
        # only reached for names that are not fields: the settings of methods registered later
        options = self.__dict__.get("method_options")
        if options is None or name.startswith("_"):
            raise AttributeError(name)
        if name in options:
            return options[name]
        if name in setting_owners():
            return None
        raise AttributeError(f"{type(self).__name__} has no setting {name!r}")

    @property
    def uses_prompt(self) -> bool:
        return self.method in method_names()

    @property
    def tasks(self) -> list[str]:
        """The task names: one, or several for a multi-task run (`task: [a, b]` or `a,b`)."""
        return [name.strip() for name in self.task.split(",") if name.strip()]

    @property
    def task_label(self) -> str:
        return "+".join(_task_name(name) for name in self.tasks)

    def forward_tokens(self, device_type: str) -> int | None:
        """The padded tokens one training forward may hold on `device_type` (None: the whole micro-batch)."""
        if self.micro_batch_tokens is not None:
            return self.micro_batch_tokens
        return CPU_FORWARD_TOKENS if device_type == "cpu" else None

    def resolved_output_dir(self) -> Path:
        """output_dir, else runs/<task>-<method>, with -<model> for any base but the default, so that runs
        of two models never meet in one folder."""
        if self.output_dir:
            return Path(self.output_dir)
        name = f"{self.task_label}-{self.method}"
        if self.model != DEFAULT_MODEL:
            stem = Path(self.model.rstrip("/")).name.removesuffix(".gguf")
            name += "-" + re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.")
        return Path("runs") / name


TrainConfig = make_dataclass(
    "TrainConfig",
    [method_setting_field(name, owners) for name, owners in setting_owners().items()],
    bases=(TrainSettings,),
    namespace={"__module__": __name__, "__doc__": "A run's settings: TrainSettings and every built-in method's own."},
)


def _task_name(task: str) -> str:
    """A task's name for labels and folder names: a task file's own `name`, else the file's stem."""
    if task.endswith((".yaml", ".yml")):
        try:
            spec = read_yaml(task, TrainConfigError, "task file")
        except TrainConfigError:
            spec = None  # the task check names what is wrong with it
        if isinstance(spec, dict) and isinstance(spec.get("name"), str) and spec["name"].strip():
            return re.sub(r"[^A-Za-z0-9._-]+", "-", spec["name"]).strip("-.") or Path(task).stem
    return Path(task).stem


FIELDS = {f.name: f for f in fields(TrainConfig) if f.name != "method_options"}
# How a prompt method's run runs or starts (settings of the run, not of the method's config).
RUNTIME_FIELDS = ("share_prompt", "init_from", "init_from_resize")


def method_fields() -> dict[str, tuple[str, ...]]:
    """Settings that belong to some methods only (set on a run of another method, they are an error),
    with the methods they belong to; read from the registry."""
    owners = {name: tuple(method.name for method in methods) for name, methods in setting_owners().items()}
    return {**owners, **{name: method_names() for name in RUNTIME_FIELDS}}


def field_help() -> dict[str, str]:
    """Every `adept train` setting's help, the settings of methods registered later included."""
    helps = {name: f.metadata["help"] for name, f in FIELDS.items()}
    for name, owners in setting_owners().items():
        helps.setdefault(name, method_setting_field(name, owners)[2].metadata["help"])
    return helps


def setting_type(name: str) -> Any:
    """The type `adept train` reads setting `name` as."""
    if name in FIELDS:
        return typing.get_type_hints(TrainConfig)[name]
    return method_setting_field(name, setting_owners()[name])[1]


def _unknown_key_message(key: str, where: str) -> str:
    close = difflib.get_close_matches(key, FIELDS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{where}: unknown key {key!r}{hint}"


def coerce(name: str, value: Any, where: str) -> Any:
    """`value` as the type of field `name` (YAML reads 1e-4 as a string; the command line gives strings)."""
    kind = setting_type(name)
    if name == "task" and isinstance(value, (list, tuple)):  # a recipe's list of tasks: one "a,b,c" string
        value = ",".join(str(item).strip() for item in value)
    optional = type(None) in typing.get_args(kind)
    if optional:
        kind = next(t for t in typing.get_args(kind) if t is not type(None))
    # "none" is a choice of some settings (quantization: none), and no value of the others
    empty = ("null", "~", "") if name in NONE_IS_A_CHOICE else ("null", "none", "~", "")
    if isinstance(value, str) and value.strip().lower() in empty:
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
        raise TrainConfigError(f"{where}: {name} must be {_type_name(kind)}; got {shown(value)}") from None


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


def shown(value: Any) -> str:
    """`repr(value)` cut short, computed without walking all of a huge value (a YAML file's aliases)."""
    import reprlib

    short = reprlib.Repr()
    short.maxlevel, short.maxlist, short.maxdict, short.maxstring, short.maxother = 3, 6, 6, 80, 80
    return short.repr(value)


def _type_name(kind: Any) -> str:
    if typing.get_origin(kind) is list:
        return f"a list of {_type_name(typing.get_args(kind)[0])}"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(kind, str(kind))


def read_recipe(path: str | os.PathLike) -> dict[str, Any]:
    """A recipe, or a run's config.yaml (checked for its format version and upgraded if older)."""
    data = read_yaml(path, TrainConfigError, "recipe")
    if data is None:  # an empty file would silently mean "the defaults"
        raise TrainConfigError(
            f"{path} is empty: a recipe (or a run's config.yaml) holds settings, one key: value a line"
        )
    if not isinstance(data, dict):
        raise TrainConfigError(f"{path}: a recipe is a mapping of settings, got {type(data).__name__}")
    if "format_version" in data:
        version = data.pop("format_version")
        data.pop(ENVIRONMENT_KEY, None)  # what the run was made under: a record, not a setting
        if not isinstance(version, int) or isinstance(version, bool) or version > RUN_FORMAT_VERSION:
            raise TrainConfigError(
                f"{path}: format_version {version!r} is newer than this adept reads ({RUN_FORMAT_VERSION}); "
                "upgrade adept-cli (pip install -U adept-cli)"
            )
    elif VERSION_0_FIELDS <= set(data):  # a complete dump without a version: a version-0 run
        data = _upgrade_version_0(data)
    return data


# Fields every version-0 config.yaml holds, whatever its method (later versions add to them).
VERSION_0_FIELDS = {"model", "task", "method", "steps", "rank", "dropout", "lora_alpha", "lora_dropout", "prompt_init"}


def _upgrade_version_0(data: dict[str, Any]) -> dict[str, Any]:
    """Version-0 runs wrote LoRA's rank as `rank` and every method's fields with their defaults; the
    fields of other methods were ignored then, so dropping them keeps what the run did."""
    data = dict(data)
    method = data.get("method")
    if method == "lora" and data.get("lora_rank") is None:
        data["lora_rank"] = data.get("rank")
    for name, methods in method_fields().items():
        if method not in methods:
            data.pop(name, None)
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
        from .recipes import recipe_file

        recipe = recipe_file(recipe)  # a path, or a name of the recipe catalogue
        layers.append((str(recipe), read_recipe(recipe)))
    layers.append(("command-line option", {k: v for k, v in (options or {}).items() if v is not None}))
    layers.append(("override", parse_overrides(overrides or [])))
    options: dict[str, Any] = {}  # settings of methods registered after TrainConfig was made
    for where, layer in layers:
        for key, value in layer.items():
            late = key not in FIELDS and key in setting_owners()
            if key not in FIELDS and not late:
                problems.append(_unknown_key_message(key, where))
                continue
            try:
                (options if late else values)[key] = coerce(key, value, where)
            except TrainConfigError as error:
                problems.append(str(error))
    model = values.get("model")
    if isinstance(model, str) and not Path(model).is_absolute() and Path(model).exists():
        # a local model as an absolute path: the run (and its adapters) then work from any folder
        values["model"] = str(Path(model).resolve())
    config = TrainConfig(**values, method_options={k: v for k, v in options.items() if v is not None})
    problems += config_problems(config)
    if problems:
        raise TrainConfigError("; ".join(problems))
    return config


def config_problems(config: TrainConfig) -> list[str]:
    """Every range / consistency problem of a config, without loading any model or data."""
    problems = []
    for name, methods in method_fields().items():
        if config.setting(name) is not None and config.method in training_methods() and config.method not in methods:
            problems.append(
                f"{name} applies to method {' / '.join(methods)}, not {config.method} "
                f"(set {name}=null to drop a recipe's value)"
            )
    if config.method in training_methods():
        try:
            method_config(config.method, **method_settings(config))
        except ConfigError as error:
            problems.append(str(error))

    def positive(name: str, minimum: float = 1) -> None:
        value = getattr(config, name)
        if value is not None and value < minimum:
            problems.append(f"{name} must be >= {minimum}; got {value}")

    for name, choices in (
        ("method", training_methods()),
        ("mixed_precision", MIXED_PRECISION),
        ("model_dtype", MODEL_DTYPES),
        ("quantization", QUANTIZATIONS),
        ("scoring", SCORINGS),
        ("mix", MIXES),
    ):
        if getattr(config, name) not in choices:
            problems.append(f"{name} must be one of {', '.join(choices)}; got {getattr(config, name)!r}")
    for name in (
        "steps",
        "batch_size",
        "grad_accum",
        "micro_batch_tokens",
        "eval_every",
        "eval_batch_size",
        "log_every",
        "keep_checkpoints",
        "max_target_length",
        "max_length",
        "train_limit",
        "k_shot",
        "validation_limit",
        "test_limit",
        "checkpoint_every",
        "mix_cap",
    ):
        positive(name)
    positive("warmup_steps", 0)
    for name in ("seed", "split_seed"):
        if not 0 <= getattr(config, name) < 2**32:
            problems.append(f"{name} must be between 0 and 2**32 - 1; got {getattr(config, name)}")
    for setting in fields(config):  # nan / inf pass every comparison below, then poison training
        value = getattr(config, setting.name)
        numbers = value if isinstance(value, list) else [value]
        if any(isinstance(number, float) and not math.isfinite(number) for number in numbers):
            problems.append(f"{setting.name} must be a finite number; got {value}")
    for name in ("lr_prompt", "lr_offsets", "lr", "adam_eps"):
        if getattr(config, name) <= 0:
            problems.append(f"{name} must be > 0; got {getattr(config, name)}")
    if config.weight_decay < 0:
        problems.append(f"weight_decay must be >= 0; got {config.weight_decay}")
    if len(config.adam_betas) != 2 or not all(0 <= b < 1 for b in config.adam_betas):
        problems.append(f"adam_betas must be two numbers in [0, 1); got {config.adam_betas}")
    if config.max_grad_norm is not None and config.max_grad_norm <= 0:
        problems.append(f"max_grad_norm must be > 0 or null; got {config.max_grad_norm}")
    if config.epochs is not None and config.epochs <= 0:
        problems.append(f"epochs must be > 0; got {config.epochs}")
    if config.share_prompt not in (None, *SHARE_PROMPT):
        problems.append(f"share_prompt must be one of {', '.join(SHARE_PROMPT)}; got {config.share_prompt!r}")
    template = config.chat_template
    if template not in (None, "none", "auto") and "{" not in template and not Path(template).is_file():
        problems.append(f"chat_template must be auto, none or a Jinja template file; {template!r} is no file")
    unknown = sorted(set(config.report_to or []) - set(TRACKERS))
    if unknown:
        problems.append(f"report_to: unknown tracker {', '.join(unknown)}; choose from {', '.join(TRACKERS)}")
    if not config.tasks:
        problems.append("task is empty")
    elif len(set(config.tasks)) != len(config.tasks):
        problems.append(f"task lists a task twice: {config.task}")
    if config.mix_temperature <= 0:
        problems.append(f"mix_temperature must be > 0; got {config.mix_temperature}")
    if config.init_from_resize not in (None, "truncate", "repeat"):
        problems.append(f"init_from_resize must be truncate or repeat; got {config.init_from_resize!r}")
    if config.init_from_resize is not None and config.init_from is None:
        problems.append("init_from_resize needs init_from (the adapter whose prompt it fits)")
    if config.k_shot is not None and config.train_limit is not None:
        problems.append("set k_shot or train_limit, not both (k_shot draws its own training examples)")
    trains_base = config.method in training_methods() and get_method(config.method).trains_base_weights
    if config.quantization != "none" and trains_base:
        title = get_method(config.method).title
        problems.append(f"quantization: {title} cannot train a quantized base; use a prompt method or lora")
    if config.batch_size % config.grad_accum:
        problems.append(f"batch_size {config.batch_size} is not divisible by grad_accum {config.grad_accum}")
    return problems


def config_warnings(config: TrainConfig) -> list[str]:
    """Settings a user could mean but probably does not; said, not refused."""
    warnings = []
    if config.epochs is None and config.warmup_steps > config.steps:
        warnings.append(
            f"warmup_steps ({config.warmup_steps}) is more than steps ({config.steps}): the learning rate never "
            "reaches its peak; set warmup_steps lower (e.g. steps / 10)"
        )
    return warnings


def method_settings(config: TrainConfig) -> dict[str, Any]:
    """The settings given for the method's settings class (its file in `adept_cli.prompt.methods`), which
    holds the defaults of those left unset."""
    return settings_of(config)


def dump_config(config: TrainConfig, environment: dict[str, Any] | None = None) -> str:
    """config.yaml: the resolved settings, then (`environment`) the versions and facts the run started under."""
    header = "# Resolved config of this run (defaults < recipe < command line).\n"
    header += "# Continue it: adept train --resume auto --output-dir <this run's directory>\n"
    body = {"format_version": RUN_FORMAT_VERSION, **config.to_dict()}
    if environment is not None:
        body[ENVIRONMENT_KEY] = environment
    return header + yaml.safe_dump(body, sort_keys=False)


def recorded_environment(path: str | os.PathLike) -> dict[str, Any]:
    """The `environment` a run's config.yaml records ({} for runs made before it was recorded)."""
    data = read_yaml(path, TrainConfigError, "run config")
    environment = data.get(ENVIRONMENT_KEY) if isinstance(data, dict) else None
    return environment if isinstance(environment, dict) else {}


def load_run_config(path: str | os.PathLike) -> TrainConfig:
    """The resolved config saved in a run directory."""
    return build_config(recipe=path)


def positions_problem(config: TrainConfig, target_length: int | None = None) -> str | None:
    """Why the base cannot take the run's prompt slots, inputs and (on a causal model) targets in its
    positions, read from the model's config alone (None when it can)."""
    from ..hf import load_config
    from ..hf import positions_problem as problem_of
    from ..prompt.methods import method_config
    from ..tasks import get_task

    model_config = load_config(config.model)
    prompt = method_config(config.method, **method_settings(config)).prompt_len if config.uses_prompt else 0
    target = target_length or config.max_target_length
    lengths = {config.max_length or get_task(name, run_code=False).max_length for name in config.tasks}
    for length in sorted(lengths, reverse=True):
        problem = problem_of(model_config, config.model, prompt, length, target)
        if problem:
            return problem
    return None
