"""What the shared prompt saves on a causal model: ADePT with l = 60 against ADePT with l = 0 (offsets only,
the floor of any input-side method), and l = 60 with the prompt run in every row (share_prompt=off).

All in one process on copies of one base, taking turns (the order rotating each round), so drift of the
machine hits every arm alike. Training: steps on batches of SST-2 (the training benchmark's step).
Generation: greedy decoding of a fixed number of new tokens for batches of SST-2 sentences. The targets
(issue "a fixed floor"): training step <= 1.35x and generation <= 1.15x the l = 0 time. The last line
printed is the result as JSON (bench/compat.sh reads it).

    python bench/shared_prompt_ratio.py                    # writes bench/results/shared_prompt_ratio.json
    python bench/shared_prompt_ratio.py --steps 4 --batches 2 --no-write
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
from common import load_benchmark_model, synchronize, write_results  # noqa: E402
from inference_speed import sst2_batches  # noqa: E402
from train_speed import timing  # noqa: E402

MODEL = "smollm2-135m"
TRAIN_ARMS = ("adept-adept60", "adept-adept0", "adept-adept60-unshared")
TARGETS = {"train": 1.35, "generate": 1.15}


def generation_times(batch_size: int, batches: int, new_tokens: int, repeats: int) -> dict[str, float]:
    """Median seconds per pass over the batches, per arm (l = 60 shared, l = 0, l = 60 unshared)."""
    from adept_cli import AdeptConfig, PromptTunedModel

    torch.manual_seed(0)
    base, tokenizer = load_benchmark_model(MODEL)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    _, padded = sst2_batches(base, tokenizer, batch_size * batches, batch_size)
    arms = {
        "adept-adept60": (60, "auto"),
        "adept-adept0": (0, "auto"),
        "adept-adept60-unshared": (60, "off"),
    }
    models = {
        name: PromptTunedModel(copy.deepcopy(base), AdeptConfig(prompt_len=length), tokenizer, share_prompt=share)
        .eval()
        .to(device)
        for name, (length, share) in arms.items()
    }
    shared = models["adept-adept60"]
    if not shared.shares_prompt:  # the point of the benchmark: say it, do not time the fallback silently
        raise SystemExit(f"the prompt is not shared on {MODEL}: {shared.not_shared_because}")

    def one_pass(model) -> float:
        synchronize()
        start = time.perf_counter()
        with torch.no_grad():
            for batch in padded:
                model.generate(
                    input_ids=batch["input_ids"].to(device),
                    attention_mask=batch["attention_mask"].to(device),
                    max_new_tokens=new_tokens,
                    min_new_tokens=new_tokens,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                )
        synchronize()
        return time.perf_counter() - start

    names = list(models)
    for name in names:  # warm-up
        one_pass(models[name])
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            seconds[name].append(one_pass(models[name]))
    return {name: statistics.median(values) for name, values in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per arm (median reported)")
    parser.add_argument("--batches", type=int, default=4, help="generation batches per pass")
    parser.add_argument("--new-tokens", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="generation passes per arm (median reported)")
    parser.add_argument("--no-write", action="store_true", help="print only; do not write bench/results/")
    args = parser.parse_args()

    train = timing(MODEL, list(TRAIN_ARMS), args.steps, 2, args.batch_size)
    generate = generation_times(args.batch_size, args.batches, args.new_tokens, args.repeats)
    step = {name: row["step_s"] for name, row in train.items()}
    ratios = {
        "train": step["adept-adept60"] / step["adept-adept0"],
        "train_unshared": step["adept-adept60-unshared"] / step["adept-adept0"],
        "generate": generate["adept-adept60"] / generate["adept-adept0"],
        "generate_unshared": generate["adept-adept60-unshared"] / generate["adept-adept0"],
    }
    payload = {
        "model": MODEL,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "generation": {"batches": args.batches, "new_tokens": args.new_tokens, "repeats": args.repeats},
        "train_step_s": step,
        "generate_pass_s": generate,
        "ratios": ratios,
        "targets": TARGETS,
        "met": {kind: ratios[kind] <= limit for kind, limit in TARGETS.items()},
    }
    for kind in ("train", "generate"):
        print(
            f"{kind:9s} ADePT-60 / ADePT-0 = {ratios[kind]:.2f}x (prompt in every row: "
            f"{ratios[kind + '_unshared']:.2f}x; target <= {TARGETS[kind]}x)",
            flush=True,
        )
    if not args.no_write:
        print(f"wrote {write_results('shared_prompt_ratio', payload)}")
    print(json.dumps(payload))


if __name__ == "__main__":
    main()
