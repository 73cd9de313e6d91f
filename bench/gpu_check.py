"""One prepared GPU check: the CUDA paths adept has and speed at real sizes, in one command, one JSON.

Models are built here from configs with random weights (speed needs no trained weights, and nothing has
to travel with the script): a SmolLM2-135M-shaped decoder, a T5-base-shaped encoder-decoder and a
1B-parameter Llama-shaped decoder; a word-level tokenizer over their vocabulary is built here too. Token
ids are random. Everything runs in bf16 (autocast over float32 adapters, as `mixed_precision: bf16`
trains).

Checks (each a pass / fail with the numbers behind it):
- shared against unshared prompt: causal ADePT-60 logits with `share_prompt` on and off, left-padded rows,
  within `LOGIT_TOLERANCE` of the largest logit (bf16 keeps about 3 significant digits);
- cached against uncached greedy generation, token for token (causal and seq2seq, ADePT-60; the random
  weights are drawn wide enough that the top token leads by a margin bf16 resolves);
- one training step per method (PT, DePT, ADePT, LoRA) on every shape: a finite loss and finite gradients.

Measures (each with the device name and versions):
- training: steps/s, tokens/s and peak memory of ADePT-60, PT-100, LoRA-16 and PEFT PromptTuning-100 at
  batch 32 (128 input + 4 target tokens);
- generation: new tokens/s of ADePT-120, the bare base and PEFT PromptTuning-200, batch 32, 64 new tokens;
- `adept serve`'s engine: 8 ADePT / PT adapters mixed in batches of 64 rows, new tokens/s;
- `adept plan`'s estimate of a training step's memory against the measured peak (CUDA's allocator).

    python bench/gpu_check.py                        # on a GPU: bench/results/gpu_check.json (< 8 min, H200)
    python bench/gpu_check.py --device cpu --tiny    # the dry run: tiny shapes, seconds (a test runs it)
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.append(str(Path(__file__).resolve().parents[1]))  # adept_cli from this checkout where not installed
from common import machine, write_results  # noqa: E402
from gpu_measures import measure_generation, measure_plan, measure_serving, measure_training  # noqa: E402
from gpu_parts import (  # noqa: E402
    LOGIT_TOLERANCE,
    Sizes,
    adapter_model,
    autocast,
    build_model,
    build_tokenizer,
    greedy,
    peft_model,
    random_features,
    random_prompts,
    train_step,
)

# -- checks -----------------------------------------------------------------------------------------------


def check_shared_logits(shape: str, args: argparse.Namespace) -> dict[str, Any]:
    base = build_model(shape, args.tiny, args.device)
    tokenizer = build_tokenizer(base.config.vocab_size)
    unshared = adapter_model(copy.deepcopy(base), tokenizer, "adept", 60, share="off")
    shared = adapter_model(base, tokenizer, "adept", 60, share="on")
    unshared.adapter.load_state_dict(shared.adapter.state_dict())
    ids, mask = random_prompts(8, 48 if not args.tiny else 10, base.config.vocab_size, seed=1)
    with torch.no_grad(), autocast(args.device):
        a = shared(ids.to(args.device), attention_mask=mask.to(args.device)).logits.float()
        b = unshared(ids.to(args.device), attention_mask=mask.to(args.device)).logits.float()
    keep = mask.to(args.device).bool()
    worst = float((a - b).abs()[keep].max())
    scale = float(b.abs()[keep].max())
    agree = float((a.argmax(-1) == b.argmax(-1))[keep].float().mean())
    return {"max_abs_diff": worst, "max_abs_logit": scale, "relative": worst / scale, "argmax_agreement": agree,
            "tolerance": LOGIT_TOLERANCE, "passed": worst <= LOGIT_TOLERANCE * scale}  # fmt: skip


def check_cached_generation(shape: str, args: argparse.Namespace) -> dict[str, Any]:
    base = build_model(shape, args.tiny, args.device)
    tokenizer = build_tokenizer(base.config.vocab_size)
    model = adapter_model(base, tokenizer, "adept", 60).eval()
    ids, mask = random_prompts(4, 24 if not args.tiny else 8, base.config.vocab_size, seed=2)
    tokens = args.sizes.check_tokens
    cached = greedy(model, ids, mask, tokens, True, args.device).cpu()
    uncached = greedy(model, ids, mask, tokens, False, args.device).cpu()
    same_rows = [bool(torch.equal(x, y)) for x, y in zip(cached, uncached)]
    first = [
        next((i for i, (p, q) in enumerate(zip(x.tolist(), y.tolist())) if p != q), None)
        for x, y in zip(cached, uncached)
    ]
    return {"rows_equal": same_rows, "first_difference": first, "new_tokens": tokens, "passed": all(same_rows)}


def check_training_steps(shape: str, args: argparse.Namespace) -> dict[str, Any]:
    out = {}
    for method in ("pt", "dept", "adept", "lora"):
        base = build_model(shape, args.tiny, args.device)
        tokenizer = build_tokenizer(base.config.vocab_size)
        seq2seq = bool(base.config.is_encoder_decoder)
        if method == "lora":
            model = peft_model(base, "lora", 16)
        else:
            model = adapter_model(base, tokenizer, method, 60 if method != "pt" else 100)
        rows = random_features(8, 32 if not args.tiny else 10, 4, base.config.vocab_size, seq2seq, seed=3)
        loss = train_step(model, rows, tokenizer, seq2seq, args.device, adept_path=method != "lora")
        out[method] = {"loss": loss, "passed": math.isfinite(loss)}
        del model, base
    return out


# -- the run ----------------------------------------------------------------------------------------------

STAGES: dict[str, tuple[Callable[[str, argparse.Namespace], dict], tuple[str, ...]]] = {
    "shared_logits": (check_shared_logits, ("smollm2-135m", "llama-1b")),
    "cached_generation": (check_cached_generation, ("smollm2-135m", "t5-base", "llama-1b")),
    "training_step": (check_training_steps, ("smollm2-135m", "t5-base", "llama-1b")),
    "train_speed": (measure_training, ("smollm2-135m", "t5-base", "llama-1b")),
    "generation_speed": (measure_generation, ("smollm2-135m", "llama-1b")),
    "serving": (measure_serving, ("smollm2-135m",)),
    "plan": (measure_plan, ("smollm2-135m", "llama-1b")),
}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every stage on every shape it names; a stage that raises is recorded (with its traceback's tail)
    and the rest go on, so one broken path does not hide the others."""
    results: dict[str, Any] = {}
    started = time.perf_counter()
    for stage, (function, shapes) in STAGES.items():
        if args.stages and stage not in args.stages:
            continue
        for shape in shapes:
            begin = time.perf_counter()
            try:
                outcome = function(shape, args)
            except Exception as error:  # recorded, not hidden: the JSON says which stage failed and how
                outcome = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()[-3000:]}
            outcome["seconds"] = time.perf_counter() - begin
            results.setdefault(stage, {})[shape] = outcome
            print(f"{stage:18s} {shape:13s} {json.dumps(_brief(outcome))}", flush=True)
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()
    results["seconds"] = time.perf_counter() - started
    return results


def _brief(outcome: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in outcome.items() if k != "traceback"}


def failures(results: dict[str, Any]) -> list[str]:
    """'stage/shape[/part]' of every failed check and every stage that raised."""
    failed = []
    for stage, shapes in results.items():
        if not isinstance(shapes, dict):
            continue
        for shape, outcome in shapes.items():
            if "error" in outcome:
                failed.append(f"{stage}/{shape}: {outcome['error']}")
            elif outcome.get("passed") is False:
                failed.append(f"{stage}/{shape}")
            failed += [f"{stage}/{shape}/{part}" for part, value in outcome.items()
                       if isinstance(value, dict) and value.get("passed") is False]  # fmt: skip
    return failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (with --tiny: the dry run)")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes and few rows: checks the script runs")
    parser.add_argument("--stages", default="", help=f"comma-separated subset of {', '.join(STAGES)}")
    parser.add_argument("--output", help="JSON file to write (default: bench/results/gpu_check.json, or "
                        "gpu_check_dry_run.json with --tiny)")  # fmt: skip
    args = parser.parse_args()
    args.stages = [s for s in args.stages.split(",") if s]
    unknown = sorted(set(args.stages) - set(STAGES))
    if unknown:
        parser.error(f"unknown stages {unknown}; choose from {', '.join(STAGES)}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("no CUDA device here; run the dry run with --device cpu --tiny")
    args.sizes = Sizes(args.tiny)
    results = run(args)
    failed = failures(results)
    payload = {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "tiny": args.tiny,
        "sizes": vars(args.sizes),
        "results": results,
        "failed": failed,
    }
    if args.output:
        path = Path(args.output)
        path.write_text(json.dumps({"command": " ".join(["python", *sys.argv]), "machine": machine(), **payload},
                                   indent=2) + "\n")  # fmt: skip
    else:
        path = write_results("gpu_check_dry_run" if args.tiny else "gpu_check", payload)
    print(f"wrote {path}; {len(failed)} failed" + "".join(f"\n  {name}" for name in failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
