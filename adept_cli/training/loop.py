"""The training loop, one for every method, through Accelerate (one CPU, one GPU or `accelerate launch`).

Read top to bottom: set up (data first, so bad rows fail before any model loads) -> train (global batch
-> micro-batches -> processes, loss normalised by the target tokens of the whole global batch) ->
evaluate and keep the best -> checkpoint -> test the best -> results.json.

`batch_size` is the global batch of one optimizer step. Step s always uses the same examples (a seeded
permutation per epoch, indexed by step), so a resumed run sees exactly the data an uninterrupted one
would, and any split into processes x accumulation steps gives the same update.
"""

from __future__ import annotations

import inspect
import math
import signal
import threading
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .. import __version__
from ..data import IGNORE_INDEX, Encoder, pad_batch
from ..evaluation import EvalResult, evaluate
from ..files import atomic_directory, write_json_atomic, write_text_atomic
from ..models import load_model, load_tokenizer
from ..tasks import get_task, load_task_data
from .checkpoint import (
    checkpoint_path,
    list_checkpoints,
    read_checkpoint,
    rng_state,
    set_rng_state,
    write_checkpoint,
)
from .config import TrainConfig, TrainConfigError, dump_config, load_run_config
from .methods import (
    build_model,
    load_trainable_state,
    parameter_groups,
    restore_trained,
    save_trained,
    trainable_state,
)
from .reporting import RunReporter

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
RESULTS_FILE = "results.json"
BEST_DIR = "best"


class BatchOrder:
    """Which training examples make up global batch `step`: epoch e is a permutation seeded by seed + e."""

    def __init__(self, count: int, batch_size: int, seed: int):
        self.count, self.batch_size, self.seed = count, batch_size, seed
        self._permutations: dict[int, list[int]] = {}

    def _permutation(self, epoch: int) -> list[int]:
        if epoch not in self._permutations:
            generator = torch.Generator().manual_seed(self.seed + epoch)
            self._permutations = {epoch: torch.randperm(self.count, generator=generator).tolist()}
        return self._permutations[epoch]

    def batch(self, step: int) -> list[int]:
        out = []
        for position in range(step * self.batch_size, (step + 1) * self.batch_size):
            epoch, offset = divmod(position, self.count)
            out.append(self._permutation(epoch)[offset])
        return out


def token_loss_sum(model: Any, raw: Any, batch: dict[str, torch.Tensor], seq2seq: bool) -> torch.Tensor:
    """Sum of the cross-entropy of every target token in `batch` (not the mean: the caller normalises).

    Causal batches are left-padded, so every target sits in the last columns: with `logits_to_keep`
    the model computes the vocabulary projection for those columns only.
    """
    labels = batch["labels"]
    if seq2seq:
        decoder_input_ids = hf_model(raw).prepare_decoder_input_ids_from_labels(labels=labels)
        logits = model(batch["input_ids"], batch["attention_mask"], decoder_input_ids=decoder_input_ids).logits
        mask = labels != IGNORE_INDEX
        return F.cross_entropy(logits[mask].float(), labels[mask], reduction="sum")
    kwargs = {}
    keep = batch.get("keep")
    if keep is not None:
        kwargs["logits_to_keep"] = keep
        labels = labels[:, -keep:]
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **kwargs).logits
    mask = labels[:, 1:] != IGNORE_INDEX  # position t predicts token t + 1
    return F.cross_entropy(logits[:, :-1][mask].float(), labels[:, 1:][mask], reduction="sum")


def causal_batch(features: list[dict[str, list[int]]], pad_id: int, slice_logits: bool) -> dict[str, Any]:
    """Left-padded causal training batch; `keep` = the trailing columns that hold targets (+1)."""
    batch: dict[str, Any] = pad_batch(features, pad_id, side="left")
    if slice_logits:
        targets = (batch["labels"] != IGNORE_INDEX).any(0).nonzero()
        first = int(targets.min()) if len(targets) else batch["labels"].shape[1] - 1
        batch["keep"] = batch["labels"].shape[1] - first + 1
    return batch


def hf_model(raw: Any) -> Any:
    """The Hugging Face model under an adapter wrapper (PromptTunedModel, PeftModel) or the model itself."""
    if hasattr(raw, "base") and hasattr(raw, "adapter"):
        return raw.base
    if hasattr(raw, "get_base_model"):
        return raw.get_base_model()
    return raw


def _linear_schedule(optimizer: Any, warmup: int, total: int) -> Any:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def make_accelerator(**kwargs: Any) -> Any:
    """An Accelerator; several processes without CUDA (e.g. `accelerate launch --multi_gpu` or torchrun on
    CPUs) use gloo on the CPU instead of falling back silently to independent single processes."""
    import os

    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    # Accelerate keeps its settings (mixed precision, ...) in process-wide singletons; a second run in
    # the same process (a notebook, a sweep) must not inherit the first one's. The process group stays.
    for state in (AcceleratorState, GradientState):
        if hasattr(state, "_reset_state"):
            state._reset_state()
    several = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return Accelerator(cpu=several and not torch.cuda.is_available(), **kwargs)


class StopRequest:
    """Ctrl-C during training asks to stop after the current step (with a checkpoint); a second one
    interrupts at once. Only in a single process: several would have to agree on the step."""

    def __init__(self, enabled: bool):
        self.requested = False
        self._previous = None
        if enabled and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True
        self.close()  # the next Ctrl-C goes to the previous handler: it interrupts at once

    def close(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


def _dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


# -- run directory ---------------------------------------------------------------------------------


def find_resume_checkpoint(run_dir: Path, resume: str | None) -> Path | None:
    """`auto`: the newest complete checkpoint of `run_dir` (None if there is none); else a given path."""
    if resume is None:
        return None
    if resume == "auto":
        found = list_checkpoints(run_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not (path / "trainer_state.json").is_file():
        raise TrainConfigError(f"--resume {path}: not a checkpoint directory (no trainer_state.json)")
    return path


def _start_run_dir(run_dir: Path, config: TrainConfig, resuming: bool) -> None:
    saved = run_dir / CONFIG_FILE
    if resuming and saved.is_file():
        before = load_run_config(saved).to_dict()
        changed = {k: (before[k], v) for k, v in config.to_dict().items() if before.get(k) != v}
        if changed:
            listed = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
            raise TrainConfigError(f"cannot resume {run_dir} with different settings ({listed})")
        return
    if saved.is_file() or list_checkpoints(run_dir):
        raise TrainConfigError(
            f"{run_dir} already holds a run; continue it with --resume auto, or choose another --output-dir"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(saved, dump_config(config))
    write_text_atomic(run_dir / METRICS_FILE, "")


def _truncate_metrics(run_dir: Path, step: int) -> None:
    """Drop log lines after the checkpoint we resume from, so the curve continues without duplicates."""
    import json

    path = run_dir / METRICS_FILE
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
    write_text_atomic(path, "".join(line + "\n" for line in kept))


# -- the loop --------------------------------------------------------------------------------------


def train(config: TrainConfig, resume: str | None = None, console: Any = None) -> dict[str, Any]:
    """Train, evaluate, keep the best, test it; returns (and writes) results.json."""
    from accelerate.utils import gather_object, set_seed

    if config.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise TrainConfigError("mixed_precision=fp16 needs a CUDA GPU; use bf16 or no on CPU")
    run_dir = config.resolved_output_dir()
    if config.tensorboard:
        _require_tensorboard()
    accelerator = make_accelerator(
        mixed_precision=config.mixed_precision,
        log_with="tensorboard" if config.tensorboard else None,
        project_dir=str(run_dir),
    )
    checkpoint = find_resume_checkpoint(run_dir, resume)
    world, rank = accelerator.num_processes, accelerator.process_index
    micro = config.batch_size // config.grad_accum
    if micro % world:
        raise TrainConfigError(
            f"batch_size {config.batch_size} / grad_accum {config.grad_accum} = {micro} examples per micro-step "
            f"cannot be shared by {world} processes; make it a multiple of {world}"
        )

    # Data first: every malformed row fails here, before a model is loaded.
    task = get_task(config.task)
    limits = {"train": config.train_limit, "validation": config.validation_limit, "test": config.test_limit}
    data = load_task_data(task, data_dir=config.data_dir, seed=config.split_seed, limits=limits)
    if config.epochs is not None:
        config = replace(config, steps=math.ceil(config.epochs * len(data["train"]) / config.batch_size), epochs=None)
    if accelerator.is_main_process:
        _start_run_dir(run_dir, config, resuming=resume is not None)
    accelerator.wait_for_everyone()
    reporter = RunReporter(run_dir / METRICS_FILE, accelerator, config, console)
    if resume == "auto" and checkpoint is None:
        reporter.note(f"no checkpoint in {run_dir / 'checkpoints'}; starting from scratch")
        if accelerator.is_main_process:
            _truncate_metrics(run_dir, 0)

    set_seed(config.seed)
    source_length = config.max_length or task.max_length
    tokenizer = load_tokenizer(config.model)
    base = load_model(config.model, _dtype(config.model_dtype))
    model = build_model(config, base, tokenizer, source_length)
    seq2seq = bool(getattr(hf_model(model).config, "is_encoder_decoder", False))
    slice_logits = "logits_to_keep" in inspect.signature(hf_model(model).forward).parameters
    encoder = Encoder(tokenizer, seq2seq, source_length, config.max_target_length)
    features = [encoder.training_features(example) for example in data["train"]]
    target_tokens = [sum(t != IGNORE_INDEX for t in f["labels"]) for f in features]
    seen_tokens = [len(f["input_ids"]) + (len(f["labels"]) if seq2seq else 0) for f in features]

    groups = parameter_groups(model, config)
    optimizer = torch.optim.AdamW(
        groups, eps=config.adam_eps, betas=tuple(config.adam_betas), weight_decay=config.weight_decay
    )
    scheduler = _linear_schedule(optimizer, config.warmup_steps, config.steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    raw = accelerator.unwrap_model(model)
    trainable_params = sum(p.numel() for p in raw.parameters() if p.requires_grad)
    total_params = sum(p.numel() for p in hf_model(raw).parameters())

    loop = {"step": 0, "best_metric": None, "best_step": None, "tokens_seen": 0}
    if checkpoint is not None:
        saved = read_checkpoint(checkpoint, rank)
        load_trainable_state(raw, saved["trainable"], str(checkpoint))
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        if saved["rng"] is not None:
            set_rng_state(saved["rng"])
        loop.update(saved["loop"])
        if accelerator.is_main_process:
            _truncate_metrics(run_dir, loop["step"])
        reporter.note(f"resumed from {checkpoint} at step {loop['step']}")
    reporter.start(
        loop["step"],
        config.steps,
        f"{config.method} on {task.name} with {config.model}: {trainable_params:,} trainable parameters "
        f"({100 * trainable_params / total_params:.4f}% of {total_params:,}), {len(features):,} training examples, "
        f"{world} process{'es' if world > 1 else ''}",
    )

    order = BatchOrder(len(features), config.batch_size, config.seed)
    checkpoint_every = config.checkpoint_every or config.eval_every
    group_names = [g["name"] for g in optimizer.param_groups]
    window_loss, window_tokens, window_seen, window_start = (
        torch.zeros((), device=accelerator.device),
        0,
        0,
        time.time(),
    )

    def save_checkpoint(step: int) -> None:
        states = gather_object([rng_state()])
        if accelerator.is_main_process:
            write_checkpoint(
                run_dir,
                step,
                trainable_state(raw),
                optimizer,
                scheduler,
                states,
                {**loop, "step": step},
                config.keep_checkpoints,
            )
        accelerator.wait_for_everyone()

    step = loop["step"]
    interrupt = StopRequest(enabled=world == 1)
    try:
        model.train()
        while step < config.steps:
            indices = order.batch(step)
            step_targets = sum(target_tokens[i] for i in indices)
            for m in range(config.grad_accum):
                mine = [features[i] for i in indices[m * micro : (m + 1) * micro][rank::world]]
                if seq2seq:
                    batch = pad_batch(mine, tokenizer.pad_token_id)
                else:
                    batch = causal_batch(mine, tokenizer.pad_token_id, slice_logits)
                batch = {k: v.to(accelerator.device) if torch.is_tensor(v) else v for k, v in batch.items()}
                sync = m == config.grad_accum - 1
                with nullcontext() if sync else accelerator.no_sync(model):
                    loss_sum = token_loss_sum(model, raw, batch, seq2seq)
                    # DDP averages gradients over processes; x world makes it the sum over the global batch.
                    accelerator.backward(loss_sum * world / max(step_targets, 1))
                window_loss += loss_sum.detach()
            if config.max_grad_norm is not None:
                accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            loop["step"] = step
            loop["tokens_seen"] += sum(seen_tokens[i] for i in indices)
            window_tokens += step_targets
            window_seen += sum(seen_tokens[i] for i in indices)

            if step % config.log_every == 0 or step == config.steps:
                total_loss = accelerator.reduce(window_loss, reduction="sum").item()
                elapsed = max(time.time() - window_start, 1e-9)
                record = {"step": step, "loss": total_loss / max(window_tokens, 1)}
                record.update({f"lr_{n}": g["lr"] for n, g in zip(group_names, optimizer.param_groups)})
                record["tokens_per_s"] = window_seen / elapsed
                reporter.train_log(record)
                window_loss.zero_()
                window_tokens, window_seen, window_start = 0, 0, time.time()
            reporter.advance(step)

            if step % config.eval_every == 0 or step == config.steps:
                result = evaluate(
                    model, encoder, task, data["validation"], config.scoring, config.eval_batch_size, accelerator
                )
                improved = loop["best_metric"] is None or result.main > loop["best_metric"]
                if improved:
                    loop["best_metric"], loop["best_step"] = result.main, step
                    if accelerator.is_main_process:
                        with atomic_directory(run_dir / BEST_DIR) as scratch:
                            save_trained(raw, scratch)
                    accelerator.wait_for_everyone()
                reporter.eval_log(step, "validation", result, best=improved)
                model.train()
            if step % checkpoint_every == 0 or step == config.steps:
                save_checkpoint(step)
            if interrupt.requested:
                if not checkpoint_path(run_dir, step).exists():
                    save_checkpoint(step)
                reporter.note(f"interrupted at step {step}; checkpoint saved. Continue with --resume auto")
                raise KeyboardInterrupt
    finally:
        interrupt.close()
        reporter.stop()

    # Test the best adapter (what `adept eval --run` would load) and write results.json.
    restore_trained(raw, run_dir / BEST_DIR)
    test = evaluate(model, encoder, task, data["test"], config.scoring, config.eval_batch_size, accelerator)
    reporter.eval_log(step, "test", test, best=False)
    results = {
        "task": task.name,
        "method": config.method,
        "model": config.model,
        "main_metric": task.main_metric,
        "scoring": config.scoring,
        "best_step": loop["best_step"],
        "validation": {task.main_metric: loop["best_metric"]},
        "test": test.metrics,
        "trainable_params": trainable_params,
        "total_params": total_params,
        "steps": config.steps,
        "examples": {split: len(rows) for split, rows in data.splits.items()},
        "tokens_seen": loop["tokens_seen"],
        "adept_version": __version__,
    }
    if accelerator.is_main_process:
        write_json_atomic(run_dir / RESULTS_FILE, results)
        if config.save_predictions:
            write_predictions(run_dir / "predictions.jsonl", data["test"], test)
    accelerator.wait_for_everyone()
    reporter.finish(results)
    accelerator.end_training()
    return results


def write_predictions(path: Path, examples: list[Any], result: EvalResult) -> None:
    import json

    lines = []
    for index, (example, output) in enumerate(zip(examples, result.outputs)):
        row = {"index": index, "source": example.source, "target": example.target, "output": output}
        if example.label is not None:
            row["label"] = example.label
        lines.append(json.dumps(row, ensure_ascii=False))
    write_text_atomic(path, "\n".join(lines) + "\n")


def _require_tensorboard() -> None:
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None and importlib.util.find_spec("tensorboardX") is None:
        raise TrainConfigError("tensorboard=true needs the tensorboard package: pip install tensorboard")
