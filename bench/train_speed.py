"""Training speed and memory: adept's PT / DePT / ADePT against PEFT's PromptTuning and LoRA.

Same model, same real SST-2 batches, same sequence lengths; each method is measured in a fresh
interpreter of this one run (so memory starts from the same baseline), and reported as a ratio to PEFT
PromptTuning with 100 virtual tokens.

    python bench/train_speed.py                       # both models, writes bench/results/train_speed.json
    python bench/train_speed.py --models smollm2-135m --steps 4
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PeakMemory, load_benchmark_model, run_worker, sst2_examples, synchronize, write_results  # noqa: E402

METHODS = {
    # name: (description, budget rule)
    "adept-pt100": "adept PT, l = 100",
    "adept-pt60": "adept PT, l = 60",
    "adept-dept60": "adept DePT, l = 60, r at the budget of PT-100",
    "adept-adept60": "adept ADePT, l = 60, r at the budget of PT-100",
    "peft-pt100": "PEFT PromptTuning, 100 virtual tokens",
    "peft-lora16": "PEFT LoRA, rank 16 (PEFT's default target modules)",
}
BASELINE = "peft-pt100"
MODELS = ("smollm2-135m", "t5-base-random")


def build(method: str, base, tokenizer):
    from adept_cli import AdeptConfig, DeptConfig, PromptTunedModel, PromptTuningConfig

    if method.startswith("adept-"):
        config = {
            "adept-pt100": PromptTuningConfig(prompt_len=100),
            "adept-pt60": PromptTuningConfig(prompt_len=60),
            "adept-dept60": DeptConfig(prompt_len=60, max_length=256),
            "adept-adept60": AdeptConfig(prompt_len=60),
        }[method]
        return PromptTunedModel(base, config, tokenizer)
    from peft import LoraConfig, TaskType, get_peft_model
    from peft import PromptTuningConfig as PeftPromptTuningConfig

    task = TaskType.SEQ_2_SEQ_LM if base.config.is_encoder_decoder else TaskType.CAUSAL_LM
    if method == "peft-pt100":
        return get_peft_model(base, PeftPromptTuningConfig(task_type=task, num_virtual_tokens=100))
    return get_peft_model(base, LoraConfig(task_type=task, r=16, lora_alpha=32, lora_dropout=0.0))


def worker(model_name: str, method: str, steps: int, warmup: int, batch_size: int) -> dict:
    from adept_cli.data import Encoder, pad_batch
    from adept_cli.training.loop import causal_batch, token_loss_sum

    torch.manual_seed(0)
    base, tokenizer = load_benchmark_model(model_name)
    seq2seq = bool(base.config.is_encoder_decoder)
    encoder = Encoder(tokenizer, seq2seq, max_length=256, max_target_length=16)
    examples = sst2_examples("train", batch_size * (steps + warmup))
    features = [encoder.training_features(e) for e in examples]
    model = build(method, base, tokenizer)
    model.train()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    ours = method.startswith("adept-")

    def step(rows) -> None:
        if ours:  # adept's training path: left-padded causal batches, logits for target columns only
            batch = pad_batch(rows, tokenizer.pad_token_id) if seq2seq else causal_batch(rows, tokenizer.pad_token_id, True)
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
            targets = int((batch["labels"] != -100).sum())
            loss = token_loss_sum(model, model, batch, seq2seq) / targets
        else:  # PEFT's path: the model computes its own loss from labels
            batch = {k: v.to(device) for k, v in pad_batch(rows, tokenizer.pad_token_id).items()}
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    batches = [features[i * batch_size : (i + 1) * batch_size] for i in range(steps + warmup)]
    for rows in batches[:warmup]:
        step(rows)
    times = []
    with PeakMemory() as memory:
        for rows in batches[warmup:]:
            synchronize()
            start = time.perf_counter()
            step(rows)
            synchronize()
            times.append(time.perf_counter() - start)
    tokens = [sum(len(f["input_ids"]) + (len(f["labels"]) if seq2seq else 0) for f in rows) for rows in batches[warmup:]]
    return {
        "method": method,
        "step_s": statistics.median(times),
        "tokens_per_s": sum(tokens) / sum(times),
        "peak_memory_mb": memory.rise_mb,
        "trainable_params": sum(p.numel() for p in trainable),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--steps", type=int, default=6, help="timed steps per method (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.steps, args.warmup, args.batch_size)))
        return
    results: dict[str, dict] = {}
    for model_name in args.models.split(","):
        results[model_name] = {}
        for method in args.methods.split(","):
            flags = ["--steps", str(args.steps), "--warmup", str(args.warmup), "--batch-size", str(args.batch_size)]
            row = run_worker(Path(__file__), ["--worker", model_name, method, *flags])
            results[model_name][method] = row
            print(f"{model_name:16s} {method:14s} {row['step_s']:.3f} s/step {row['tokens_per_s']:8.1f} tok/s "
                  f"{row['peak_memory_mb']:8.1f} MB  {row['trainable_params']:,} params", flush=True)  # fmt: skip
        base = results[model_name].get(BASELINE)
        if base:
            for row in results[model_name].values():
                row["time_ratio_to_peft_pt100"] = row["step_s"] / base["step_s"]
                row["memory_ratio_to_peft_pt100"] = row["peak_memory_mb"] / max(base["peak_memory_mb"], 1e-9)
    path = write_results(
        "train_speed",
        {"batch_size": args.batch_size, "steps": args.steps, "warmup": args.warmup, "methods": METHODS, "results": results},
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
