"""Training speed and memory: adept's PT / DePT / ADePT against PEFT's PromptTuning and LoRA.

Same model, same real SST-2 batches, same sequence lengths. Times: every method in one process, on
copies of one base model, taking turns step by step (so drift of the machine hits all alike). Peak
memory: each method alone in a fresh interpreter (a clean baseline). Reported as ratios to PEFT
PromptTuning with 100 virtual tokens.

    python bench/train_speed.py                       # both models, writes bench/results/train_speed.json
    python bench/train_speed.py --models smollm2-135m --steps 4
    python bench/train_speed.py --models smollm2-135m --results shared_prompt_train \
        --methods adept-adept60,adept-adept60-unshared,adept-adept0,peft-pt100
"""

from __future__ import annotations

import argparse
import copy
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
    "adept-adept60-unshared": "adept ADePT, l = 60, prompt run in every row (share_prompt=off)",
    "adept-adept0": "adept ADePT, l = 0 (offsets only: the floor of any input-side method)",
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
            "adept-adept60-unshared": AdeptConfig(prompt_len=60),
            "adept-adept0": AdeptConfig(prompt_len=0),
        }[method]
        return PromptTunedModel(base, config, tokenizer, share_prompt="off" if "unshared" in method else "auto")
    from peft import LoraConfig, TaskType, get_peft_model
    from peft import PromptTuningConfig as PeftPromptTuningConfig

    task = TaskType.SEQ_2_SEQ_LM if base.config.is_encoder_decoder else TaskType.CAUSAL_LM
    if method == "peft-pt100":
        return get_peft_model(base, PeftPromptTuningConfig(task_type=task, num_virtual_tokens=100))
    return get_peft_model(base, LoraConfig(task_type=task, r=16, lora_alpha=32, lora_dropout=0.0))


class Runner:
    """One method's model, optimizer and training step on the shared batches."""

    def __init__(self, method: str, base, tokenizer, seq2seq: bool, device: str):
        self.method, self.tokenizer, self.seq2seq, self.device = method, tokenizer, seq2seq, device
        self.model = build(method, base, tokenizer).to(device)
        self.model.train()
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trainable, lr=1e-4)

    def step(self, rows) -> None:
        from adept_cli.encoding import pad_batch
        from adept_cli.training.loop import causal_batch, token_loss_sum

        pad = self.tokenizer.pad_token_id
        if self.method.startswith("adept-"):  # adept's training path (left-padded, target logits only)
            batch = pad_batch(rows, pad) if self.seq2seq else causal_batch(rows, pad, True)
            batch = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}
            targets = int((batch["labels"] != -100).sum())
            loss = token_loss_sum(self.model, self.model, batch, self.seq2seq) / targets
        else:  # PEFT's path: the model computes its own loss from labels
            batch = {k: v.to(self.device) for k, v in pad_batch(rows, pad).items()}
            loss = self.model(**batch).loss
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def _setup(model_name: str, count: int):
    from adept_cli.encoding import Encoder

    torch.manual_seed(0)
    base, tokenizer = load_benchmark_model(model_name)
    seq2seq = bool(base.config.is_encoder_decoder)
    encoder = Encoder(tokenizer, seq2seq, max_length=256, max_target_length=16)
    features = [encoder.training_features(e) for e in sst2_examples("train", count)]
    return base, tokenizer, seq2seq, features


def timing(model_name: str, methods: list[str], steps: int, warmup: int, batch_size: int) -> dict[str, dict]:
    """Every method in this one process, on copies of one base model, stepping in turns (the order rotates
    each round) so that drift of the machine affects all methods alike."""
    base, tokenizer, seq2seq, features = _setup(model_name, batch_size * (steps + warmup))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    runners = [Runner(m, copy.deepcopy(base), tokenizer, seq2seq, device) for m in methods]
    batches = [features[i * batch_size : (i + 1) * batch_size] for i in range(steps + warmup)]
    times: dict[str, list[float]] = {m: [] for m in methods}
    for index, rows in enumerate(batches):
        order = runners[index % len(runners) :] + runners[: index % len(runners)]
        for runner in order:
            synchronize()
            start = time.perf_counter()
            runner.step(rows)
            synchronize()
            if index >= warmup:
                times[runner.method].append(time.perf_counter() - start)
    tokens = sum(len(f["input_ids"]) + (len(f["labels"]) if seq2seq else 0) for rows in batches[warmup:] for f in rows)
    return {
        r.method: {
            "method": r.method,
            "step_s": statistics.median(times[r.method]),
            "tokens_per_s": tokens / sum(times[r.method]),
            "trainable_params": sum(p.numel() for p in r.trainable),
        }
        for r in runners
    }


def memory_worker(model_name: str, method: str, batch_size: int) -> dict:
    """Peak memory of a few steps of one method, alone in a fresh interpreter (a clean baseline)."""
    base, tokenizer, seq2seq, features = _setup(model_name, batch_size * 3)
    runner = Runner(method, base, tokenizer, seq2seq, "cuda" if torch.cuda.is_available() else "cpu")
    with PeakMemory() as memory:  # from the first step: activations, gradients and optimizer state
        for i in range(3):
            runner.step(features[i * batch_size : (i + 1) * batch_size])
    return {"peak_memory_mb": memory.rise_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--steps", type=int, default=12, help="timed steps per method (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--results", default="train_speed", help="name of the results file in bench/results/")
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(memory_worker(*args.worker, args.batch_size)))
        return
    methods = args.methods.split(",")
    results: dict[str, dict] = {}
    for model_name in args.models.split(","):
        results[model_name] = timing(model_name, methods, args.steps, args.warmup, args.batch_size)
        for method, row in results[model_name].items():
            row.update(
                run_worker(Path(__file__), ["--worker", model_name, method, "--batch-size", str(args.batch_size)])
            )
            print(
                f"{model_name:16s} {method:14s} {row['step_s']:.3f} s/step {row['tokens_per_s']:8.1f} tok/s "
                f"{row['peak_memory_mb']:8.1f} MB  {row['trainable_params']:,} params",
                flush=True,
            )
        base = results[model_name].get(BASELINE)
        if base:
            for row in results[model_name].values():
                row["time_ratio_to_peft_pt100"] = row["step_s"] / base["step_s"]
                row["memory_ratio_to_peft_pt100"] = row["peak_memory_mb"] / max(base["peak_memory_mb"], 1e-9)
    path = write_results(
        args.results,
        {
            "batch_size": args.batch_size,
            "steps": args.steps,
            "warmup": args.warmup,
            "methods": METHODS,
            "results": results,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
