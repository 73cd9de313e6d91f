"""The setup phases of a training run, each a named function the loop calls in order:

accelerator -> data (bad rows fail here, before any model loads) -> run directory (claimed and locked)
-> resume checkpoint -> model -> optimizer and schedule.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from ..encoding import IGNORE_INDEX, Encoder, chat_format, chat_template_text
from ..files import sha256_file, write_text_atomic
from ..hf import (
    enable_gradient_checkpointing,
    forward_parameters,
    is_seq2seq,
    load_model,
    load_tokenizer,
    make_accelerator,
    unwrap,
)
from ..run_dir import RunDir, RunDirError
from ..tasks import TaskData, get_task, load_task_data
from ..tasks.few_shot import draw_k_shot
from ..tasks.spec import Task
from .checkpoint import UnverifiedCheckpoint, read_checkpoint
from .config import TrainConfig, TrainConfigError, dump_config, load_run_config
from .trackers import make_trackers, require_packages, tracker_names
from .trainable import build_model, parameter_groups
from .transfer import initialize_from

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def setup_accelerator(config: TrainConfig, run: RunDir) -> Any:
    if config.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise TrainConfigError("mixed_precision=fp16 needs a CUDA GPU; use bf16 or no on CPU")
    trackers = tracker_names(config)
    require_packages(trackers)
    accelerator = make_accelerator(
        mixed_precision=config.mixed_precision,
        log_with=make_trackers(trackers, run, config.tracker_project) or None,
        project_dir=str(run.path),
    )
    micro, world = config.batch_size // config.grad_accum, accelerator.num_processes
    if micro % world:
        raise TrainConfigError(
            f"batch_size {config.batch_size} / grad_accum {config.grad_accum} = {micro} examples per micro-step "
            f"cannot be shared by {world} processes; make it a multiple of {world}"
        )
    return accelerator


@dataclass
class TaskPart:
    """One task of a run (a multi-task run has several): its examples, and its encoder once the model is set."""

    task: Task
    data: TaskData
    encoder: Encoder | None = None

    @property
    def name(self) -> str:
        return self.task.name


def setup_data(config: TrainConfig) -> tuple[list[TaskPart], TrainConfig]:
    """Every split of every task read and formatted (a malformed row fails here); `epochs` turned into
    `steps` (over the training examples of all tasks)."""
    limits = {"train": config.train_limit, "validation": config.validation_limit, "test": config.test_limit}
    parts = []
    for name in config.tasks:
        task = get_task(name)
        data = load_task_data(task, data_dir=config.data_dir, seed=config.split_seed, limits=limits)
        if config.k_shot is not None:
            data = draw_k_shot(data, config.k_shot, config.split_seed)
        parts.append(TaskPart(task, data))
    if config.epochs is not None:
        examples = sum(len(part.data["train"]) for part in parts)
        config = replace(config, steps=math.ceil(config.epochs * examples / config.batch_size), epochs=None)
    return parts, config


@contextmanager
def claimed_run_dir(run: RunDir, accelerator: Any, config: TrainConfig, resuming: bool) -> Iterator[None]:
    """The main process creates and locks the run directory, clears leftovers of interrupted writes and
    checks that a new run finds no run there and a resumed one keeps its settings. A run that fails
    before it has written its config leaves no folder behind (nothing blocks a rerun)."""
    if not accelerator.is_main_process:
        accelerator.wait_for_everyone()
        yield
        return
    created = not run.path.exists()
    try:
        run.path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise RunDirError(f"cannot create the run directory {run.path}: a file is in the way") from None
    except OSError as error:
        raise RunDirError(f"cannot create the run directory {run.path}: {error.strerror}") from None
    try:
        with run.lock():
            run.remove_leftovers()
            if not resuming and (run.holds_a_run() or run.checkpoint_folders()):
                raise TrainConfigError(
                    f"{run.path} already holds a run; continue it with --resume auto, or choose another --output-dir"
                )
            if resuming and run.holds_a_run():
                _check_unchanged(run, config)
            accelerator.wait_for_everyone()
            yield
    except BaseException:
        if created and not run.holds_a_run():
            shutil.rmtree(run.path, ignore_errors=True)
        raise


def find_resume_checkpoint(run: RunDir, resume: str | None, rank: int, note: Any) -> dict[str, Any] | None:
    """The state to resume from: `auto` takes the newest verified checkpoint of the run (a damaged or
    unverified one is named and skipped), a path takes that checkpoint (one without checksums, from an
    earlier version, with a warning; a damaged one never); None starts from scratch."""
    if resume is None:
        return None
    if resume != "auto":
        path = Path(resume)
        if not (path / "trainer_state.json").is_file():
            raise TrainConfigError(f"--resume {path}: not a checkpoint directory (no trainer_state.json)")
        try:
            return {"path": path, **read_checkpoint(path, rank)}
        except UnverifiedCheckpoint as error:
            note(f"warning: {error}; resuming from it because --resume names it")
            return {"path": path, **read_checkpoint(path, rank, verified=False)}
    damage: list[RunDirError] = []
    for path in reversed(run.checkpoint_folders()):
        try:
            return {"path": path, **read_checkpoint(path, rank)}
        except RunDirError as error:
            damage.append(error)
            note(f"warning: {error}; trying the checkpoint before it")
    if damage:
        unverified = any(isinstance(error, UnverifiedCheckpoint) for error in damage)
        hint = "; to resume from one without checksums anyway, name it: --resume PATH" if unverified else ""
        raise RunDirError(f"no verified checkpoint in {run.checkpoints}: {'; '.join(map(str, damage))}{hint}")
    note(f"no checkpoint in {run.checkpoints}; starting from scratch")
    return None


# Where a run and its data live, not what it trains: a run folder moved or copied elsewhere resumes.
LOCATION_SETTINGS = ("output_dir", "data_dir")
# How a step's rows are split into forwards, not what they are: the gradient is the same either way.
EXECUTION_SETTINGS = ("micro_batch_tokens",)


def _check_unchanged(run: RunDir, config: TrainConfig) -> None:
    before = load_run_config(run.config).to_dict()
    changed = {
        k: (before[k], v)
        for k, v in config.to_dict().items()
        if before.get(k) != v and k not in (*LOCATION_SETTINGS, *EXECUTION_SETTINGS)
    }
    if changed:
        listed = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
        raise TrainConfigError(f"cannot resume {run.path} with different settings ({listed})")


def write_run_start(run: RunDir, config: TrainConfig, environment: dict[str, Any]) -> None:
    """config.yaml (with the `environment` the run starts under) and an empty log for a new run (written
    once the model has loaded)."""
    if not run.holds_a_run():
        write_text_atomic(run.metrics, "")
        write_text_atomic(run.config, dump_config(config, environment))


@dataclass
class TrainableModel:
    """The model to train and everything the loop derives from it and the training rows."""

    model: Any
    tokenizer: Any
    seq2seq: bool
    slice_logits: bool  # the base computes logits for the trailing columns only (`logits_to_keep`)
    features: list[dict[str, list[int]]]  # the training examples of every task, task after task
    owners: list[int]  # per training example: the index of its task
    chat_template: str | None  # the Jinja text inputs and targets are wrapped in (None: plain text)
    target_tokens: list[int]  # per training example: the tokens its loss covers
    seen_tokens: list[int]  # per training example: every token the model reads


def setup_model(config: TrainConfig, parts: list[TaskPart], device: Any = None) -> TrainableModel:
    """The model, and every task's encoder (its own input length) and training features. A quantized
    base is loaded straight onto `device` (bitsandbytes places its weights as it loads them)."""
    lengths = [config.max_length or part.task.max_length for part in parts]
    tokenizer = load_tokenizer(config.model)
    base = load_model(config.model, DTYPES[config.model_dtype], config.quantization, device)
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(base)
    model = build_model(config, base, tokenizer, max(lengths))
    if config.init_from is not None:
        initialize_from(model, config)
    seq2seq = is_seq2seq(base)
    slice_logits = "logits_to_keep" in forward_parameters(base)
    chat_template = chat_template_text(tokenizer, config.chat_template)
    chat = chat_format(tokenizer, chat_template, seq2seq)
    features, owners = [], []
    for index, (part, length) in enumerate(zip(parts, lengths)):
        part.encoder = Encoder(tokenizer, seq2seq, length, config.max_target_length, chat)
        features += [part.encoder.training_features(example) for example in part.data["train"]]
        owners += [index] * len(part.data["train"])
    return TrainableModel(
        model=model,
        tokenizer=tokenizer,
        seq2seq=seq2seq,
        slice_logits=slice_logits,
        features=features,
        owners=owners,
        chat_template=chat_template,
        target_tokens=[sum(t != IGNORE_INDEX for t in f["labels"]) for f in features],
        seen_tokens=[len(f["input_ids"]) + (len(f["labels"]) if seq2seq else 0) for f in features],
    )


def setup_optimizer(model: Any, config: TrainConfig) -> tuple[Any, Any]:
    """AdamW over the method's parameter groups; linear warmup, then linear decay to 0."""
    optimizer = torch.optim.AdamW(
        parameter_groups(model, config),
        eps=config.adam_eps,
        betas=tuple(config.adam_betas),
        weight_decay=config.weight_decay,
    )
    warmup, total = config.warmup_steps, config.steps

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def evaluation_settings(config: TrainConfig, parts: list[TaskPart], chat_template: str | None) -> dict[str, Any]:
    """What `adept eval --adapter` needs to score an adapter exactly as its run did. A multi-task adapter
    records its tasks and the shared lengths; evaluating it names one of the tasks."""
    if len(parts) > 1:
        return {
            "tasks": [_task_reference(part.task) for part in parts],
            "max_length": config.max_length,
            "max_target_length": config.max_target_length,
            "scoring": config.scoring,
            "split_seed": config.split_seed,
            "chat_template": chat_template,
            "base_quantization": config.quantization,
        }
    task = parts[0].task
    settings = {
        "task": _task_reference(task),
        "template": task.template,
        "max_length": config.max_length or task.max_length,
        "max_target_length": config.max_target_length,
        "scoring": config.scoring,
        "split_seed": config.split_seed,
        "chat_template": chat_template,
        "base_quantization": config.quantization,
    }
    if task.origin != "built-in" and Path(task.origin).is_file():
        settings["task_sha256"] = sha256_file(Path(task.origin))
    return settings


def _task_reference(task: Task) -> str:
    return task.name if task.origin == "built-in" else str(Path(task.origin).resolve())


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total of the base model)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in unwrap(model).parameters())
