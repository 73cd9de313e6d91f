"""Load what a run (or a saved adapter) produced, and evaluate it on a task split."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .adapter_io import ADAPTER_CONFIG, FORMAT, load_adapter
from .data import Encoder
from .errors import AdeptError
from .evaluation import EvalResult, evaluate
from .models import DEFAULT_MODEL, load_model, load_tokenizer
from .tasks import get_task, load_task_data
from .training.config import TrainConfig, load_run_config
from .training.loop import BEST_DIR, CONFIG_FILE, hf_model
from .training.methods import load_trained


class RunError(AdeptError, RuntimeError):
    """A run directory or adapter is missing or incomplete."""


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    model_name: str
    method: str  # adept | dept | pt | lora | full | base
    config: TrainConfig | None = None  # the run's config, when loaded from a run


def load_from_run(run_dir: str | Path, weights: str | None = None) -> LoadedModel:
    """The model of a run: its best adapter (or `weights`, another saved directory of the same method)."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise RunError(f"{run_dir} is not a run directory (no {CONFIG_FILE})")
    config = load_run_config(run_dir / CONFIG_FILE)
    directory = Path(weights) if weights else run_dir / BEST_DIR
    if not directory.is_dir():
        raise RunError(f"{directory} not found: the run has not finished an evaluation yet")
    model = load_trained(config.method, directory, config.model)
    return LoadedModel(model, load_tokenizer(config.model), config.model, config.method, config)


def load_from_adapter(adapter_dir: str | Path, model_name: str | None = None) -> LoadedModel:
    """An adept adapter or a PEFT adapter directory, on `model_name` (default: the base it records)."""
    adapter_dir = Path(adapter_dir)
    path = adapter_dir / ADAPTER_CONFIG
    if not path.is_file():
        raise RunError(f"{path} not found: --adapter takes a directory with {ADAPTER_CONFIG}")
    metadata = json.loads(path.read_text(encoding="utf-8"))
    name = model_name or metadata.get("base_model_name_or_path")
    if not name:
        raise RunError(f"{path} names no base model; pass --model")
    if metadata.get("format") == FORMAT:
        model = load_adapter(adapter_dir, base=load_model(name), base_model_name=name)
        return LoadedModel(model, load_tokenizer(name), name, metadata["method"])
    from peft import PeftModel

    return LoadedModel(PeftModel.from_pretrained(load_model(name), adapter_dir), load_tokenizer(name), name, "peft")


def load_base(model_name: str | None) -> LoadedModel:
    """The base model alone: the zero-shot baseline."""
    name = model_name or DEFAULT_MODEL
    return LoadedModel(load_model(name), load_tokenizer(name), name, "base")


def evaluate_loaded(
    loaded: LoadedModel,
    task_name: str | None = None,
    split: str = "test",
    scoring: str | None = None,
    batch_size: int = 32,
    limit: int | None = None,
    data_dir: str | None = None,
    max_length: int | None = None,
    accelerator: Any = None,
) -> tuple[EvalResult, list[Any]]:
    """Metrics on one split; settings default to the run's own (task, scoring, lengths, split seed)."""
    config = loaded.config
    task_name = task_name or (config.task if config else None)
    if not task_name:
        raise RunError("--task is required when evaluating without a run")
    task = get_task(task_name)
    seed = config.split_seed if config else 42
    data_dir = data_dir if data_dir is not None else (config.data_dir if config else None)
    if limit is None and config is not None:
        limit = config.validation_limit if split == "validation" else config.test_limit
    examples = load_task_data(task, [split], data_dir=data_dir, seed=seed, limits={split: limit})[split]
    seq2seq = bool(getattr(hf_model(loaded.model).config, "is_encoder_decoder", False))
    source_length = max_length or (config.max_length if config and config.max_length else task.max_length)
    target_length = config.max_target_length if config else 128
    encoder = Encoder(loaded.tokenizer, seq2seq, source_length, target_length)
    if accelerator is not None:
        loaded.model.to(accelerator.device)
    scoring = scoring or (config.scoring if config else "generate")
    return evaluate(loaded.model, encoder, task, examples, scoring, batch_size, accelerator), examples
