"""The measurements of bench/gpu_check.py: training and generation speed, the serving engine, and
`adept plan`'s estimate against the measured peak."""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.append(str(Path(__file__).resolve().parents[1]))  # adept_cli from this checkout where not installed
from common import synchronize  # noqa: E402
from gpu_parts import (  # noqa: E402
    adapter_model,
    autocast,
    build_model,
    build_tokenizer,
    greedy,
    peak_memory,
    peft_model,
    random_features,
    random_prompts,
    train_step,
)

TRAIN_ARMS = {
    "adept-60": ("adept", "adept", 60),
    "pt-100": ("adept", "pt", 100),
    "lora-16": ("peft", "lora", 16),
    "peft-pt-100": ("peft", "pt", 100),
}


def measure_training(shape: str, args: argparse.Namespace) -> dict[str, Any]:
    sizes = args.sizes
    out = {}
    for arm, (owner, kind, size) in TRAIN_ARMS.items():
        base = build_model(shape, args.tiny, args.device)
        tokenizer = build_tokenizer(base.config.vocab_size)
        seq2seq = bool(base.config.is_encoder_decoder)
        model = adapter_model(base, tokenizer, kind, size) if owner == "adept" else peft_model(base, kind, size)
        count = sizes.train_batch * (sizes.train_steps + sizes.warmup)
        features = random_features(count, sizes.source, sizes.target, base.config.vocab_size, seq2seq, seed=4)
        batches = [features[i : i + sizes.train_batch] for i in range(0, count, sizes.train_batch)]
        row: dict[str, Any] = {}
        times = []
        with peak_memory(args.device, row):
            for index, rows in enumerate(batches):
                synchronize()
                start = time.perf_counter()
                loss = train_step(model, rows, tokenizer, seq2seq, args.device, adept_path=owner == "adept")
                synchronize()
                if index >= sizes.warmup:
                    times.append(time.perf_counter() - start)
        tokens = sum(
            len(f["input_ids"]) + (len(f["labels"]) if seq2seq else 0)
            for f in features[sizes.warmup * sizes.train_batch :]
        )  # noqa: E501
        row.update(steps_per_s=len(times) / sum(times), tokens_per_s=tokens / sum(times), last_loss=loss,
                   median_step_s=statistics.median(times))  # fmt: skip
        out[arm] = row
        del model, base
    return out


def measure_generation(shape: str, args: argparse.Namespace) -> dict[str, Any]:
    sizes = args.sizes
    base = build_model(shape, args.tiny, args.device)
    tokenizer = build_tokenizer(base.config.vocab_size)
    ids, mask = random_prompts(sizes.gen_batch, sizes.gen_source, base.config.vocab_size, seed=5)
    arms: dict[str, Callable[[], Any]] = {}
    adept = adapter_model(copy.deepcopy(base), tokenizer, "adept", 120, budget_len=200).eval()
    arms["adept-120"] = lambda: greedy(adept, ids, mask, sizes.new_tokens, True, args.device)
    arms["base"] = lambda: greedy(base, ids, mask, sizes.new_tokens, True, args.device)
    peft = peft_model(copy.deepcopy(base), "pt", 200).eval()
    arms["peft-pt-200"] = lambda: greedy(peft, ids, mask, sizes.new_tokens, True, args.device)
    times: dict[str, list[float]] = {arm: [] for arm in arms}
    for arm in arms:
        arms[arm]()  # warm-up: kernels, the prompt cache
    for repeat in range(sizes.repeats):  # taking turns, the order rotating
        order = list(arms)[repeat % len(arms) :] + list(arms)[: repeat % len(arms)]
        for arm in order:
            synchronize()
            start = time.perf_counter()
            arms[arm]()
            synchronize()
            times[arm].append(time.perf_counter() - start)
    new = sizes.gen_batch * sizes.new_tokens
    out = {
        arm: {"new_tokens_per_s": new / statistics.median(t), "median_s": statistics.median(t)}
        for arm, t in times.items()
    }  # noqa: E501
    out["adept-120_time_over_base"] = out["base"]["new_tokens_per_s"] / out["adept-120"]["new_tokens_per_s"]
    return out


def measure_serving(shape: str, args: argparse.Namespace) -> dict[str, Any]:
    from adept_cli import save_adapter
    from adept_cli.serving.engine import Engine
    from adept_cli.serving.protocol import GenerationRow, Sampling

    sizes = args.sizes
    base = build_model(shape, args.tiny, args.device)
    tokenizer = build_tokenizer(base.config.vocab_size)
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for index in range(sizes.serve_adapters):
            method = "adept" if index % 2 == 0 else "pt"
            torch.manual_seed(index)
            model = adapter_model(base, tokenizer, method, 60)
            paths.append(save_adapter(model, Path(folder) / f"a{index}"))
            model.unwrap()
        engine = Engine(base, tokenizer, shape)
        for index, path in enumerate(paths):
            engine.add(f"a{index}", path)
        ids, mask = random_prompts(sizes.serve_rows, sizes.gen_source, base.config.vocab_size, seed=6)
        rows = [
            GenerationRow(f"a{i % sizes.serve_adapters}", row[m.bool()].tolist(), sizes.new_tokens)
            for i, (row, m) in enumerate(zip(ids, mask))
        ]
        sampling = Sampling(min_tokens=sizes.new_tokens)
        with autocast(args.device):
            engine.generate(rows, sampling)  # warm-up: every adapter's prompt cache
            times = []
            for _ in range(sizes.repeats):
                synchronize()
                start = time.perf_counter()
                answers = engine.generate(rows, sampling)
                synchronize()
                times.append(time.perf_counter() - start)
    tokens = sum(answer.completion_tokens for answer in answers)
    return {"rows": len(rows), "adapters": sizes.serve_adapters, "new_tokens_per_s": tokens / statistics.median(times),
            "median_s": statistics.median(times)}  # fmt: skip


def measure_plan(shape: str, args: argparse.Namespace) -> dict[str, Any]:
    """`adept plan`'s estimate against one measured step of the same shape (its own measure_peak)."""
    from adept_cli.training.config import TrainConfig
    from adept_cli.training.plan import measure_peak, plan_memory

    sizes = args.sizes
    with tempfile.TemporaryDirectory() as folder:
        base = build_model(shape, args.tiny, "cpu")
        base.save_pretrained(folder)
        build_tokenizer(base.config.vocab_size).save_pretrained(folder)
        del base
        shape = dict(batch_size=sizes.train_batch, max_length=sizes.source, max_target_length=sizes.target)
        config = TrainConfig(model=folder, method="adept", prompt_len=60, model_dtype="bfloat16", **shape)
        plan = plan_memory(config, sizes.target, device_type=torch.device(args.device).type)
        measured = measure_peak(config, sizes.target, device=args.device)
    return {"estimate_mb": plan.total_bytes / 2**20, "measured_mb": measured / 2**20,
            "estimate_over_measured": plan.total_bytes / measured}  # fmt: skip
