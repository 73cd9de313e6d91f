"""The training loop, one for every method, through Accelerate (one CPU, one GPU or `accelerate launch`).

Read top to bottom: `train` sets up (setup.py, in order) -> `fit` runs the steps (global batch ->
micro-batches -> processes, loss normalised by the target tokens of the whole global batch), evaluating,
keeping the best and checkpointing -> `finish` tests the best adapter and writes results.json.

`batch_size` is the global batch of one optimizer step. Step s always uses the same examples (a seeded
permutation per epoch, indexed by step), so a resumed run sees exactly the data an uninterrupted one
would, and any split into processes x accumulation steps gives the same update.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from .. import __version__
from ..encoding import IGNORE_INDEX, pad_batch, trailing_label_columns
from ..environment import recorded_versions
from ..evaluation import evaluate, write_predictions
from ..evaluation.execution import sandbox_for
from ..files import atomic_directory, write_json_atomic, write_text_atomic
from ..hf import quantization_problem, unwrap
from ..prompt.model import PromptTunedModel
from ..run_dir import RunDir, RunDirError, read_metrics
from .checkpoint import rng_state, set_rng_state, write_checkpoint
from .config import ENVIRONMENT_KEY, TrainConfig, TrainConfigError
from .mixture import MixtureOrder, mixture_weights
from .progress import RunReporter
from .setup import (
    TaskPart,
    TrainableModel,
    claimed_run_dir,
    count_parameters,
    evaluation_settings,
    find_resume_checkpoint,
    setup_accelerator,
    setup_data,
    setup_model,
    setup_optimizer,
    write_run_start,
)
from .trackers import close_trackers, tracker_names
from .trainable import load_trainable_state, restore_trained, save_trained, trainable_state


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
        decoder_input_ids = unwrap(raw).prepare_decoder_input_ids_from_labels(labels=labels)
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
        batch["keep"] = trailing_label_columns(batch["labels"])
    return batch


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


@dataclass
class LoopState:
    """What a checkpoint's trainer_state.json holds."""

    step: int = 0
    best_metric: float | None = None
    best_step: int | None = None
    tokens_seen: int = 0
    best_per_task: dict[str, float] | None = None  # a multi-task run: each task's main metric at best_step
    # the loss and target tokens since the last metrics line, so that the first line after a resume averages
    # the same steps as the uninterrupted run's (log_every need not divide the checkpoint interval)
    log_window: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoopState:
        """A checkpoint's trainer_state.json, each field checked (a number where a number belongs)."""
        state = cls(**data)  # an unknown field: TypeError

        def numbers(value: Any, keys: Any = None) -> bool:
            values = value.values() if keys is None else [value.get(k) for k in keys]
            return isinstance(value, dict) and all(_is_number(v) for v in values)

        fine = {
            "step": _is_number(state.step, int) and state.step >= 0,
            "best_metric": state.best_metric is None or _is_number(state.best_metric),
            "best_step": state.best_step is None or _is_number(state.best_step, int),
            "tokens_seen": _is_number(state.tokens_seen, int),
            "best_per_task": state.best_per_task is None or numbers(state.best_per_task),
            "log_window": state.log_window is None or numbers(state.log_window, ("loss", "targets")),
        }
        wrong = [name for name, ok in fine.items() if not ok]
        if wrong:
            raise ValueError(f"{', '.join(wrong)} of the wrong type")
        return state


def _is_number(value: Any, kind: type | tuple[type, ...] = (int, float)) -> bool:
    return isinstance(value, kind) and not isinstance(value, bool)


@dataclass
class Run:
    """One training run: its settings, directory, data, model and optimizer, as `train` set them up."""

    config: TrainConfig
    dir: RunDir
    accelerator: Any
    reporter: RunReporter
    parts: list[TaskPart]  # one task, or the tasks of a multi-task run
    trainable: TrainableModel
    model: Any  # prepared by Accelerate (DDP-wrapped under several processes)
    raw: Any  # the model itself
    optimizer: Any
    scheduler: Any
    eval_settings: dict[str, Any]
    state: LoopState = field(default_factory=LoopState)
    window: dict[str, Any] = field(default_factory=dict)  # what the next metrics line averages (fit sets it)
    # told (step, validation metric) after each evaluation once its checkpoint is written; a search's pruner
    # stops the run by raising from it
    on_validation: Callable[[int, float], None] | None = None


# -- the loop --------------------------------------------------------------------------------------


def train(
    config: TrainConfig,
    resume: str | None = None,
    console: Any = None,
    on_validation: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Train, evaluate, keep the best, test it; returns (and writes) results.json. `on_validation(step,
    metric)` hears each validation once the step's checkpoint is written."""
    from accelerate.utils import set_seed

    run_dir = RunDir(config.resolved_output_dir())
    accelerator = setup_accelerator(config, run_dir)
    problem = quantization_problem(config.quantization, accelerator.device.type)
    if problem:  # before any data or weights are read
        raise TrainConfigError(problem)
    parts, config = setup_data(config)
    reporter = RunReporter(run_dir.metrics, accelerator, config, console)
    if any(part.task.kind == "code" for part in parts):  # know now, not at the first evaluation, if code can run
        reporter.note(f"generated code runs in: {sandbox_for(config.allow_unsafe_exec).describe()}")
    # every write of the run, from its first, fails on a full disk with one line naming the file
    with run_dir.writing(), claimed_run_dir(run_dir, accelerator, config, resuming=resume is not None):
        saved = find_resume_checkpoint(run_dir, resume, accelerator.process_index, reporter.note)
        set_seed(config.seed)
        trainable = setup_model(config, parts, accelerator.device)
        if isinstance(trainable.model, PromptTunedModel) and not trainable.model.shares_prompt:
            reporter.note(f"the prompt runs in every row: {trainable.model.not_shared_because}")
        elif isinstance(trainable.model, PromptTunedModel) and config.gradient_checkpointing:
            reporter.note("gradient checkpointing: the prompt runs in every row while training (transformers drops "
                          "the cache of checkpointed layers); evaluation shares it")  # fmt: skip
        optimizer, scheduler = setup_optimizer(trainable.model, config)
        model, optimizer = accelerator.prepare(trainable.model, optimizer)
        run = Run(
            config=config,
            dir=run_dir,
            accelerator=accelerator,
            reporter=reporter,
            parts=parts,
            trainable=trainable,
            model=model,
            raw=accelerator.unwrap_model(model),
            optimizer=optimizer,
            scheduler=scheduler,
            eval_settings=evaluation_settings(config, parts, trainable.chat_template),
            on_validation=on_validation,
        )
        if accelerator.is_main_process:
            write_run_start(run_dir, config, run_environment(trainable.model))
            if config.k_shot is not None:
                drawn = {part.name: part.data.drawn for part in parts}
                write_json_atomic(run_dir.k_shot, drawn[parts[0].name] if len(parts) == 1 else {"tasks": drawn})
        if config.init_from is not None:
            reporter.note(f"started from the prompt and offsets of {config.init_from}")
        accelerator.wait_for_everyone()
        restore(run, saved)
        try:
            fit(run)
        except BaseException:
            # a stopped run (Ctrl-C, a pruned trial) ends its tracker runs: a search goes on to its next
            # trial in this process, whose tracker run must not find this one still open
            close_trackers(accelerator, tracker_names(config))
            raise
        return finish(run)


def run_environment(model: Any) -> dict[str, Any]:
    """What a run records beside its settings: the versions it ran under and, for prompt methods, whether
    the prompt's computation was shared (and why not)."""
    environment: dict[str, Any] = {"versions": recorded_versions()}
    if isinstance(model, PromptTunedModel):
        environment["shared_prompt"] = {"shared": model.shares_prompt, "why_not": model.not_shared_because}
    return environment


def restore(run: Run, saved: dict[str, Any] | None) -> None:
    """Continue from a checkpoint (its metrics lines after it dropped), or start the log afresh."""
    if saved is not None:
        try:
            load_trainable_state(run.raw, saved["trainable"], str(saved["path"]))
            run.optimizer.load_state_dict(saved["optimizer"])
            run.scheduler.load_state_dict(saved["scheduler"])
            if saved["rng"] is not None:
                set_rng_state(saved["rng"])
            run.state = LoopState.from_dict(saved["loop"])
        except (RuntimeError, ValueError, TypeError, KeyError, IndexError) as error:
            # well-formed files whose contents do not fit this run (another model, or made by hand)
            raise RunDirError(
                f"the checkpoint {saved['path']} does not fit this run ({type(error).__name__}: {str(error)[:160]}); "
                "remove it to resume from the one before, or start afresh"
            ) from None
        run.reporter.note(f"resumed from {saved['path']} at step {run.state.step}")
    if run.accelerator.is_main_process:
        truncate_metrics(run.dir, run.state.step, run.reporter.note)


def truncate_metrics(run_dir: RunDir, step: int, note: Any) -> None:
    """Keep the log lines written before the checkpoint of `step` (its training and validation lines;
    the test line comes after it), so a resumed curve continues without duplicates; a line torn by a
    kill is dropped."""
    records, dropped = read_metrics(run_dir.metrics)
    if dropped:
        note(f"warning: dropped {dropped} unreadable line(s) of {run_dir.metrics}")
    kept = [r for r in records if r["step"] < step or (r["step"] == step and r.get("kind") != "test")]
    write_text_atomic(run_dir.metrics, "".join(json.dumps(record) + "\n" for record in kept))


def fit(run: Run) -> None:
    """Optimizer steps up to `steps`: log, evaluate and keep the best, checkpoint; Ctrl-C stops cleanly."""
    config, accelerator, trainable, state = run.config, run.accelerator, run.trainable, run.state
    world, rank = accelerator.num_processes, accelerator.process_index
    micro = config.batch_size // config.grad_accum
    trainable_params, total_params = count_parameters(run.raw)
    run.reporter.start(
        state.step,
        config.steps,
        f"{config.method} on {config.task_label} with {config.model}: {trainable_params:,} trainable parameters "
        f"({100 * trainable_params / total_params:.4f}% of {total_params:,}), "
        f"{len(trainable.features):,} training examples, {world} process{'es' if world > 1 else ''}",
    )
    order = batch_order(run)
    forward_tokens = config.forward_tokens(accelerator.device.type)
    if forward_tokens is not None:
        run.reporter.note(
            f"each step's rows go through forwards of at most {forward_tokens:,} padded tokens "
            "(micro_batch_tokens; the gradient is the whole batch's)"
        )
    checkpoint_every = config.checkpoint_every or config.eval_every
    carried = state.log_window or {"loss": 0.0, "targets": 0}  # summed over processes: rank 0 carries it
    loss = torch.tensor(carried["loss"] if accelerator.is_main_process else 0.0, device=accelerator.device)
    window = {"loss": loss, "targets": int(carried["targets"]), "seen": 0, "start": time.time()}
    run.window = window
    interrupt = StopRequest(enabled=world == 1)
    try:
        run.model.train()
        while state.step < config.steps:
            indices = order.batch(state.step)
            step_targets = sum(trainable.target_tokens[i] for i in indices)
            forwards = [
                piece
                for m in range(config.grad_accum)
                for piece in split_by_tokens(
                    [trainable.features[i] for i in indices[m * micro : (m + 1) * micro][rank::world]],
                    forward_tokens,
                    trainable.seq2seq,
                )
            ]
            for k, features in enumerate(forwards):
                batch = _micro_batch(trainable, features, accelerator.device)
                sync = k == len(forwards) - 1
                with nullcontext() if sync else accelerator.no_sync(run.model):
                    loss_sum = token_loss_sum(run.model, run.raw, batch, trainable.seq2seq)
                    # DDP averages gradients over processes; x world makes it the sum over the global batch.
                    accelerator.backward(loss_sum * world / max(step_targets, 1))
                window["loss"] += loss_sum.detach()
            if config.max_grad_norm is not None:
                accelerator.clip_grad_norm_(run.model.parameters(), config.max_grad_norm)
            run.optimizer.step()
            run.scheduler.step()
            run.optimizer.zero_grad(set_to_none=True)
            state.step += 1
            seen = sum(trainable.seen_tokens[i] for i in indices)
            state.tokens_seen += seen
            window["targets"] += step_targets
            window["seen"] += seen

            if state.step % config.log_every == 0 or state.step == config.steps:
                log_training(run, window)
            run.reporter.advance(state.step)
            validated = None
            if state.step % config.eval_every == 0 or state.step == config.steps:
                validated = validate_and_keep_best(run)
            if state.step % checkpoint_every == 0 or state.step == config.steps:
                save_checkpoint(run)
            if validated is not None and run.on_validation is not None:
                if not run.dir.checkpoint(state.step).exists():  # a stopped run can continue from here
                    save_checkpoint(run)
                run.on_validation(state.step, validated)
            if interrupt.requested:
                if not run.dir.checkpoint(state.step).exists():
                    save_checkpoint(run)
                run.reporter.note(f"interrupted at step {state.step}; checkpoint saved. Continue with --resume auto")
                raise KeyboardInterrupt
    finally:
        interrupt.close()
        run.reporter.stop()


Features = list[dict[str, list[int]]]


def split_by_tokens(features: Features, max_tokens: int | None, seq2seq: bool) -> list[Features]:
    """`features` in forwards of at most `max_tokens` padded tokens (a longer row goes alone), longest rows
    first so that rows of similar length share a forward; None keeps them in one forward. The loss is a
    sum over rows, so the step's gradient does not depend on the split."""
    if max_tokens is None or not features:
        return [features]

    def lengths(feature: dict[str, list[int]]) -> tuple[int, int]:
        # a seq2seq row's decoder reads its labels too; a causal row's labels lie inside its input
        return len(feature["input_ids"]), len(feature["labels"]) if seq2seq else 0

    pieces: list[Features] = []
    widest = (0, 0)  # the current piece's longest input and longest labels
    for feature in sorted(features, key=lambda f: sum(lengths(f)), reverse=True):
        source, target = lengths(feature)
        grown = (max(widest[0], source), max(widest[1], target))
        if pieces and (len(pieces[-1]) + 1) * sum(grown) <= max_tokens:
            pieces[-1].append(feature)
            widest = grown
        else:
            pieces.append([feature])
            widest = (source, target)
    return pieces


def _micro_batch(trainable: TrainableModel, features: Features, device: Any) -> dict[str, Any]:
    pad_id = trainable.tokenizer.pad_token_id
    if trainable.seq2seq:
        batch = pad_batch(features, pad_id)
    else:
        batch = causal_batch(features, pad_id, trainable.slice_logits)
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def log_training(run: Run, window: dict[str, Any]) -> None:
    total_loss = run.accelerator.reduce(window["loss"], reduction="sum").item()
    elapsed = max(time.time() - window["start"], 1e-9)
    record = {"step": run.state.step, "loss": total_loss / max(window["targets"], 1)}
    record.update({f"lr_{g['name']}": g["lr"] for g in run.optimizer.param_groups})
    record["tokens_per_s"] = window["seen"] / elapsed
    run.reporter.train_log(record)
    window["loss"].zero_()
    window.update(targets=0, seen=0, start=time.time())


def batch_order(run: Run) -> BatchOrder | MixtureOrder:
    """Which examples make up each global batch: a seeded permutation for one task, a mixture for several."""
    config, trainable = run.config, run.trainable
    if len(run.parts) == 1:
        return BatchOrder(len(trainable.features), config.batch_size, config.seed)
    sizes = [len(part.data["train"]) for part in run.parts]
    weights = mixture_weights(sizes, config.mix, config.mix_temperature, config.mix_cap)
    shares = ", ".join(f"{part.name} {weight:.2f}" for part, weight in zip(run.parts, weights))
    run.reporter.note(f"task mixture ({config.mix}): {shares}")
    return MixtureOrder(trainable.owners, weights, config.batch_size, config.seed)


def evaluate_parts(run: Run, split: str) -> list[Any]:
    """Every task's metrics on `split`, each with its own encoder."""
    config = run.config
    return [
        evaluate(
            run.model,
            part.encoder,
            part.task,
            part.data[split],
            config.scoring,
            config.eval_batch_size,
            run.accelerator,
            config.allow_unsafe_exec,
        )
        for part in run.parts
    ]


def selection_metric(results: list[Any]) -> float:
    """The main metric of the one task, or the mean of the tasks' main metrics."""
    return sum(result.main for result in results) / len(results)


def log_parts(run: Run, split: str, results: list[Any], best: bool) -> None:
    """Log each task's metrics (and, for several tasks, their mean)."""
    step = run.state.step
    if len(run.parts) == 1:
        run.reporter.eval_log(step, split, results[0], best=best)
        return
    for part, result in zip(run.parts, results):
        run.reporter.eval_log(step, split, result, best=False, task=part.name)
    run.reporter.mean_log(step, split, selection_metric(results), best=best)


def validate_and_keep_best(run: Run) -> float:
    """The validation metric now (the selection metric); the best checkpoint kept when it improved."""
    state = run.state
    results = evaluate_parts(run, "validation")
    main = selection_metric(results)
    improved = state.best_metric is None or main > state.best_metric
    if improved:
        state.best_metric, state.best_step = main, state.step
        if len(run.parts) > 1:
            state.best_per_task = {part.name: result.main for part, result in zip(run.parts, results)}
        if run.accelerator.is_main_process:
            with run.dir.writing(run.dir.best), atomic_directory(run.dir.best) as scratch:
                save_trained(run.raw, run.config.method, scratch, run.eval_settings)
        run.accelerator.wait_for_everyone()
    log_parts(run, "validation", results, best=improved)
    run.model.train()
    return main


def save_checkpoint(run: Run) -> None:
    from accelerate.utils import gather_object

    states = gather_object([rng_state()])
    if run.window:
        loss = run.accelerator.reduce(run.window["loss"].clone(), reduction="sum").item()
        run.state.log_window = {"loss": loss, "targets": run.window["targets"]}
    if run.accelerator.is_main_process:
        with run.dir.writing(run.dir.checkpoint(run.state.step)):
            write_checkpoint(
                run.dir,
                run.state.step,
                trainable_state(run.raw),
                run.optimizer,
                run.scheduler,
                states,
                run.state.to_dict(),
                run.config.keep_checkpoints,
            )
    run.accelerator.wait_for_everyone()


def finish(run: Run) -> dict[str, Any]:
    """Test the best adapter (what `adept eval --run` would load) and write results.json."""
    config, state, accelerator, parts = run.config, run.state, run.accelerator, run.parts
    restore_trained(run.raw, config.method, run.dir.best)
    tests = evaluate_parts(run, "test")
    log_parts(run, "test", tests, best=False)
    trainable_params, total_params = count_parameters(run.raw)
    if len(parts) == 1:
        task, test = parts[0].task, tests[0]
        summary = {
            "task": task.name,
            "main_metric": task.main_metric,
            "validation": {task.main_metric: state.best_metric},
            "test": test.metrics,
            "examples": {split: len(rows) for split, rows in parts[0].data.splits.items()},
        }
    else:
        per_task = {
            part.name: {
                "main_metric": part.task.main_metric,
                "validation": {part.task.main_metric: (state.best_per_task or {}).get(part.name)},
                "test": test.metrics,
                "examples": {split: len(rows) for split, rows in part.data.splits.items()},
            }
            for part, test in zip(parts, tests)
        }
        summary = {
            "task": config.task_label,
            "tasks": [part.name for part in parts],
            "main_metric": "mean",
            "validation": {"mean": state.best_metric},
            "test": {"mean": selection_metric(tests)}
            | {f"{part.name}/{part.task.main_metric}": test.main for part, test in zip(parts, tests)},
            "per_task": per_task,
            "mix": config.mix,
        }
    results = {
        "task": summary.pop("task"),
        "method": config.method,
        "model": config.model,
        "scoring": config.scoring,
        "best_step": state.best_step,
        **summary,
        "trainable_params": trainable_params,
        "total_params": total_params,
        "steps": config.steps,
        "k_shot": config.k_shot,
        "init_from": config.init_from,
        "tokens_seen": state.tokens_seen,
        "adept_version": __version__,
        ENVIRONMENT_KEY: run_environment(run.raw),
    }
    if accelerator.is_main_process:
        write_json_atomic(run.dir.results, results)
        if config.save_predictions:
            for part, test in zip(parts, tests):
                path = run.dir.predictions if len(parts) == 1 else run.dir.path / f"predictions.{part.name}.jsonl"
                write_predictions(path, part.data["test"], test)
    accelerator.wait_for_everyone()
    run.reporter.finish(results)
    close_trackers(accelerator, tracker_names(config))
    return results
