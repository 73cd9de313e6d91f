"""Load what a run (or a saved adapter) produced, and evaluate it on a task split with the settings it
was trained with (a run's config, or the evaluation settings an adapter carries), options overriding."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .encoding import Encoder, chat_format, is_template_text
from .environment import version_changes
from .errors import AdeptError
from .evaluation import EvalResult, evaluate
from .files import read_json_object, sha256_file
from .hf import DEFAULT_MODEL, is_seq2seq, load_model, load_tokenizer, positions_problem
from .prompt.adapter_files import (
    ADAPTER_CONFIG,
    EVALUATION_FILE,
    EVALUATION_KEY,
    FORMAT,
    checked_adapter_config,
    read_evaluation_settings,
)
from .prompt.io import load_adapter
from .run_dir import RunDir
from .tasks import DEFAULT_SPLIT_SEED, Example, Task, get_task, load_task_data, task_code
from .training.config import (
    TrainConfig,
    TrainConfigError,
    coerce,
    config_problems,
    load_run_config,
    recorded_environment,
    shown,
)
from .training.trainable import load_trained

DEFAULT_TARGET_LENGTH = 128
DEFAULT_SCORING = "generate"


class RunError(AdeptError, RuntimeError):
    """A run directory or adapter is missing or incomplete."""


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    model_name: str
    method: str  # adept | dept | pt | lora | full | peft | base
    config: TrainConfig | None = None  # the run's config, when loaded from a run
    evaluation: dict[str, Any] = field(default_factory=dict)  # settings saved with an adapter
    versions: dict[str, Any] | None = None  # the package versions the run or adapter was made under


def load_from_run(run_dir: str | Path, device: Any = None, quantization: str | None = None) -> LoadedModel:
    """The model of a run: its best adapter, on the base loaded as the run loaded it (quantized onto
    `device` when the run was), or as `quantization` says."""
    run = RunDir(Path(run_dir))
    if not run.holds_a_run():
        raise RunError(f"{run.path} is not a run directory (no {run.config.name})")
    config = load_run_config(run.config)
    if not run.best.is_dir():
        raise RunError(f"{run.best} not found: the run has not finished an evaluation yet")
    quantization = quantization or config.quantization
    model = load_trained(config.method, run.best, config.model, quantization=quantization, device=device)
    versions = recorded_environment(run.config).get("versions")
    return LoadedModel(model, load_tokenizer(config.model), config.model, config.method, config, versions=versions)


def load_from_adapter(
    adapter_dir: str | Path, model_name: str | None = None, quantization: str | None = None, device: Any = None
) -> LoadedModel:
    """An adept adapter or a PEFT adapter directory, on `model_name` (default: the base it records), at
    full precision unless `quantization` (4bit / 8bit) asks for a quantized base on `device`."""
    adapter_dir = Path(adapter_dir)
    path = adapter_dir / ADAPTER_CONFIG
    if not path.is_file():
        raise RunError(f"{path} not found: --adapter takes a directory with {ADAPTER_CONFIG}")
    metadata = read_json_object(path, RunError, "an adapter config")
    native = metadata.get("format") == FORMAT
    if native:
        checked_adapter_config(metadata, path)  # format and version checked before any model loads
    evaluation = checked_evaluation(read_evaluation_settings(adapter_dir), adapter_dir)
    name = model_name or metadata.get("base_model_name_or_path")
    if not name:
        raise RunError(f"{path} names no base model; pass --model")
    base = load_model(name, quantization=quantization, device=device)
    if native:
        model = load_adapter(adapter_dir, base=base, base_model_name=name)
        versions = metadata.get("versions")
        return LoadedModel(
            model, load_tokenizer(name), name, metadata["method"], evaluation=evaluation, versions=versions
        )
    from peft import PeftModel

    model = PeftModel.from_pretrained(base, adapter_dir).eval()
    return LoadedModel(model, load_tokenizer(name), name, "peft", evaluation=evaluation)


# An adapter's recorded evaluation settings that are run settings, by the name a run's config gives them
RECORDED_AS_RUN_SETTINGS = {
    "max_length": "max_length",
    "max_target_length": "max_target_length",
    "scoring": "scoring",
    "split_seed": "split_seed",
    "base_quantization": "quantization",
}


def checked_evaluation(settings: dict[str, Any], directory: str | Path) -> dict[str, Any]:
    """The evaluation settings an adapter in `directory` records, held to the rules of a run's settings
    (types and ranges), so that a hand-made or damaged one is refused when it is loaded, naming the
    field, instead of failing later on a request. A chat template is recorded as its text: one given as a
    path would make adept read a file the adapter's author chose."""
    sidecar = Path(directory) / EVALUATION_FILE
    where = str(sidecar) if sidecar.is_file() else f"{Path(directory) / ADAPTER_CONFIG} {EVALUATION_KEY}"
    problems, values = [], {}
    for name in ("task", "template", "task_sha256", "chat_template"):
        if settings.get(name) is not None and (not isinstance(settings[name], str) or not settings[name]):
            problems.append(f"{name} must be a non-empty string; got {shown(settings[name])}")
    template = settings.get("chat_template")
    if isinstance(template, str) and template not in ("auto", "none") and not is_template_text(template):
        problems.append(f"chat_template must be auto, none or the template's text; got {shown(template)}")
    tasks = settings.get("tasks")
    if tasks is not None and not (isinstance(tasks, list) and tasks and all(isinstance(t, str) and t for t in tasks)):
        problems.append(f"tasks must be a list of task names; got {shown(tasks)}")
    for recorded, name in RECORDED_AS_RUN_SETTINGS.items():
        if settings.get(recorded) is not None:
            try:
                values[name] = coerce(name, settings[recorded], recorded)
            except TrainConfigError as error:
                problems.append(str(error).replace(f"{recorded}: {name}", recorded, 1))
    if not problems:
        problems = [
            problem.replace("quantization", "base_quantization") for problem in config_problems(TrainConfig(**values))
        ]
    if problems:
        raise RunError(f"{where}: {'; '.join(problems)}")
    return {
        **settings,
        **{recorded: values[name] for recorded, name in RECORDED_AS_RUN_SETTINGS.items() if name in values},
    }


def load_base(model_name: str | None, quantization: str | None = None, device: Any = None) -> LoadedModel:
    """The base model alone: the zero-shot baseline."""
    name = model_name or DEFAULT_MODEL
    return LoadedModel(load_model(name, quantization=quantization, device=device), load_tokenizer(name), name, "base")


def run_settings(config: TrainConfig) -> dict[str, Any]:
    """What a run's config says about evaluating its adapter, in the shape adapters record it (one
    `task`, or `tasks` for a multi-task run)."""
    named = {"task": config.task} if len(config.tasks) == 1 else {"tasks": config.tasks}
    return {
        **named,
        "scoring": config.scoring,
        "max_length": config.max_length,
        "max_target_length": config.max_target_length,
        "split_seed": config.split_seed,
        "chat_template": config.chat_template,
    }


@dataclass
class EvalSettings:
    task: str
    scoring: str
    max_length: int | None  # None: the task's
    max_target_length: int
    split_seed: int
    data_dir: str | None
    limits: dict[str, int | None]
    allow_unsafe_exec: bool = False
    chat_template: str | None = None  # a setting (auto, a file) or the recorded template text
    task_named: bool = False  # the user named the task (not only the run or adapter): its code may run


def eval_settings(
    loaded: LoadedModel,
    task: str | None = None,
    scoring: str | None = None,
    max_length: int | None = None,
    max_target_length: int | None = None,
    data_dir: str | None = None,
    limit: int | None = None,
    allow_unsafe_exec: bool = False,
    chat_template: str | None = None,
) -> EvalSettings:
    """Given options first, then the run's config or the adapter's saved settings, then defaults."""
    config, saved = loaded.config, loaded.evaluation
    if config is not None:
        recorded = run_settings(config)
        limits = {"validation": config.validation_limit, "test": config.test_limit}
    else:
        recorded, limits = saved, {}
    trained_on = recorded.get("tasks") or []
    if task is None and len(trained_on) > 1:
        raise RunError(f"this adapter was trained on several tasks ({', '.join(trained_on)}); pass --task with one")
    named = task is not None
    task = task or recorded.get("task")
    if not task:
        raise RunError("--task is required: the adapter records no task")
    if limit is not None:
        limits = {"validation": limit, "test": limit}
    return EvalSettings(
        task=task,
        scoring=scoring or recorded.get("scoring") or DEFAULT_SCORING,
        max_length=max_length or recorded.get("max_length"),
        max_target_length=max_target_length or recorded.get("max_target_length") or DEFAULT_TARGET_LENGTH,
        split_seed=recorded.get("split_seed", DEFAULT_SPLIT_SEED),
        data_dir=data_dir if data_dir is not None else (config.data_dir if config else None),
        limits=limits,
        allow_unsafe_exec=allow_unsafe_exec or bool(config and config.allow_unsafe_exec),
        chat_template=chat_template if chat_template is not None else recorded.get("chat_template"),
        task_named=named,
    )


def prepare_split(
    loaded: LoadedModel, settings: EvalSettings, split: str, scoring: bool = True
) -> tuple[Task, list[Example], Encoder]:
    """The task, the examples of `split` and the encoder, as the run that made the model had them; with
    `scoring`, the task can score (see `task_to_score`)."""
    task = task_to_score(settings) if scoring else get_task(settings.task, run_code=False)
    limits = {split: settings.limits.get(split)}
    examples = load_task_data(task, [split], data_dir=settings.data_dir, seed=settings.split_seed, limits=limits)
    return task, examples[split], encoder_for(loaded, settings, task)


def task_to_score(settings: EvalSettings) -> Task:
    """The task with the metric functions it names imported. A task file recorded by a run or an adapter
    (not named by the user) that names Python code is refused: a run folder or adapter from someone else
    must not run code of theirs here; naming the task (`--task FILE`) is the user saying they trust it."""
    code = task_code(settings.task)
    if code and not settings.task_named:
        raise RunError(
            f"the task file {settings.task}, recorded by this run or adapter, names Python code ({', '.join(code)}) "
            f"that scoring would import and run; if you trust it, name the task yourself: --task {settings.task}"
        )
    return get_task(settings.task)


def encoder_for(loaded: LoadedModel, settings: EvalSettings, task: Task) -> Encoder:
    """Token ids for `task`'s texts with the lengths the model was trained with."""
    source_length = settings.max_length or task.max_length
    seq2seq = is_seq2seq(loaded.model)
    problem = positions_problem(
        loaded.model, loaded.model_name, _prompt_slots(loaded.model), source_length, settings.max_target_length
    )
    if problem:
        raise RunError(problem)
    chat = chat_format(loaded.tokenizer, settings.chat_template, seq2seq)
    return Encoder(loaded.tokenizer, seq2seq, source_length, settings.max_target_length, chat)


def _prompt_slots(model: Any) -> int:
    """The prompt positions a model puts before every input: an adept adapter's, a PEFT prompt's, or none."""
    slots = getattr(model, "prompt_len", None)
    if isinstance(slots, int):
        return slots
    config = getattr(model, "active_peft_config", None)
    return int(getattr(config, "num_virtual_tokens", 0) or 0) if getattr(config, "is_prompt_learning", False) else 0


def evaluate_loaded(
    loaded: LoadedModel,
    settings: EvalSettings,
    split: str = "test",
    batch_size: int = 32,
    accelerator: Any = None,
) -> tuple[EvalResult, list[Example]]:
    """Metrics on one split."""
    if batch_size < 1:
        raise RunError(f"batch size must be >= 1; got {batch_size}")
    task, examples, encoder = prepare_split(loaded, settings, split)
    if accelerator is not None:
        loaded.model.to(accelerator.device)
    result = evaluate(
        loaded.model, encoder, task, examples, settings.scoring, batch_size, accelerator, settings.allow_unsafe_exec
    )
    return result, examples


def template_warning(loaded: LoadedModel, settings: EvalSettings) -> str | None:
    """A line saying why scores may differ from the run's: the task's template or file changed since."""
    saved = loaded.evaluation
    if not saved or settings.task != saved.get("task"):
        return None
    task = get_task(settings.task, run_code=False)
    if saved.get("template") not in (None, task.template):
        return f"warning: the template of task {task.name!r} differs from the one this adapter was trained with"
    digest = saved.get("task_sha256")
    if digest and Path(task.origin).is_file() and sha256_file(Path(task.origin)) != digest:
        return f"warning: {task.origin} has changed since this adapter was trained (sha256 differs)"
    return None


def loaded_notes(loaded: LoadedModel) -> list[str]:
    """What to tell a user once before scoring: versions changed since the run or adapter was made, and a
    prompt that runs in every row (slower, same results) with the reason."""
    notes = []
    changes = version_changes(loaded.versions)
    if changes:
        notes.append(f"warning: made under other package versions ({', '.join(changes)}): scores may differ slightly")
    not_shared = getattr(loaded.model, "not_shared_because", None)
    if not_shared is not None:
        notes.append(f"the prompt runs in every row: {not_shared}")
    return notes
