"""Inference speed on classification-length inputs (the paper's Table 8: SST-2, samples per second).

PT (l = 200), DePT (l = 120) and ADePT (l = 120) with r at the budget of PT-200, the ADePT merged export
(plain transformers + PEFT, no offset network), and PEFT PromptTuning with 200 virtual tokens. Each method
labels the same SST-2 sentences with greedy decoding of two tokens, in batches; all methods run in one
process, taking turns.

    python bench/inference_speed.py                  # writes bench/results/inference_speed.json
    python bench/inference_speed.py --models smollm2-135m --results shared_prompt_inference \
        --methods adept-adept120,adept-adept120-unshared,base,peft-pt200
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_benchmark_model, sst2_examples, synchronize, write_results  # noqa: E402

METHODS = {
    "adept-pt200": "adept PT, l = 200",
    "adept-dept120": "adept DePT, l = 120, r at the budget of PT-200",
    "adept-adept120": "adept ADePT, l = 120, r at the budget of PT-200",
    "adept-adept120-unshared": "adept ADePT, l = 120, prompt run in every row (share_prompt=off)",
    "base": "the bare base model, no adapter",
    "adept-merged120": "ADePT l = 120 merged export: plain transformers + PEFT PromptTuning(120), no FFN",
    "peft-pt200": "PEFT PromptTuning, 200 virtual tokens",
}
MODELS = ("smollm2-135m", "t5-base-random")
NEW_TOKENS = 2


def build(method: str, base, tokenizer, workdir: Path):
    from adept_cli import AdeptConfig, DeptConfig, PromptTunedModel, PromptTuningConfig

    dim = base.get_input_embeddings().weight.shape[1]
    budget = 200 * dim
    if method == "base":
        return base
    if method == "peft-pt200":
        from peft import PromptTuningConfig as PeftPromptTuningConfig
        from peft import TaskType, get_peft_model

        task = TaskType.SEQ_2_SEQ_LM if base.config.is_encoder_decoder else TaskType.CAUSAL_LM
        return get_peft_model(base, PeftPromptTuningConfig(task_type=task, num_virtual_tokens=200))
    config = {
        "adept-pt200": PromptTuningConfig(prompt_len=200),
        "adept-dept120": DeptConfig(prompt_len=120, budget=budget, max_length=256),
        "adept-adept120": AdeptConfig(prompt_len=120, budget=budget),
        "adept-adept120-unshared": AdeptConfig(prompt_len=120, budget=budget),
        "adept-merged120": AdeptConfig(prompt_len=120, budget=budget),
    }[method]
    model = PromptTunedModel(base, config, tokenizer, share_prompt="off" if "unshared" in method else "auto")
    if method != "adept-merged120":
        return model
    from adept_cli.export import _load_merged, export_merged
    from adept_cli.prompt.adapter_files import MERGED_PROMPT_FOLDER

    with torch.no_grad():  # a trained-looking adapter: non-zero offsets
        for parameter in model.adapter.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.01)
    export_merged(model.eval(), tokenizer, workdir / "merged")
    assert (workdir / "merged" / MERGED_PROMPT_FOLDER).is_dir()
    return _load_merged(workdir / "merged", 120)


def sst2_batches(base, tokenizer, count: int, batch_size: int) -> tuple[list[list[int]], list[dict]]:
    """Token ids of the first `count` SST-2 validation sentences, and their padded batches (left-padded for
    a causal model, right-padded for a seq2seq one)."""
    from adept_cli.encoding import pad_batch

    ids = [tokenizer(e.source)["input_ids"] for e in sst2_examples("validation", count)]
    side = "right" if base.config.is_encoder_decoder else "left"
    batches = [
        pad_batch([{"input_ids": row} for row in ids[i : i + batch_size]], tokenizer.pad_token_id, side=side)
        for i in range(0, len(ids), batch_size)
    ]
    return ids, batches


def label(model, batch: dict, pad_token_id: int, device: str = "cpu") -> None:
    """Greedy decoding of NEW_TOKENS tokens for one batch: what every method is timed on."""
    with torch.no_grad():
        model.generate(
            input_ids=batch["input_ids"].to(device),
            attention_mask=batch["attention_mask"].to(device),
            max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS,
            do_sample=False,
            pad_token_id=pad_token_id,
        )


def measure(model_name: str, methods: list[str], count: int, batch_size: int, repeats: int) -> dict[str, dict]:
    """Every method in this one process (copies of one base model), passes taken in turns with the order
    rotating each repeat, so drift of the machine hits all methods alike."""
    torch.manual_seed(0)
    base, tokenizer = load_benchmark_model(model_name)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    ids, batches = sst2_batches(base, tokenizer, count, batch_size)
    with tempfile.TemporaryDirectory() as workdir:
        models = {m: build(m, copy.deepcopy(base), tokenizer, Path(workdir)).eval().to(device) for m in methods}

        def one_pass(model) -> float:
            synchronize()
            start = time.perf_counter()
            for batch in batches:
                label(model, batch, tokenizer.pad_token_id, device)
            synchronize()
            return time.perf_counter() - start

        for model in models.values():  # warm-up
            one_pass(model)
        seconds: dict[str, list[float]] = {m: [] for m in methods}
        for repeat in range(repeats):
            order = methods[repeat % len(methods) :] + methods[: repeat % len(methods)]
            for method in order:
                seconds[method].append(one_pass(models[method]))
    mean_tokens = sum(map(len, ids)) / len(ids)
    # What a sample costs: its batch's padded length (every row of a batch runs at the longest row's length).
    mean_padded = sum(batch["input_ids"].numel() for batch in batches) / len(ids)
    return {
        m: {
            "method": m,
            "samples_per_s": len(ids) / statistics.median(seconds[m]),
            "seconds": seconds[m],
            "samples": len(ids),
            "mean_input_tokens": mean_tokens,
            "mean_padded_tokens": mean_padded,
        }
        for m in methods
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--count", type=int, default=128, help="SST-2 validation sentences")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--results", default="inference_speed", help="name of the results file in bench/results/")
    args = parser.parse_args()
    methods = args.methods.split(",")
    results: dict[str, dict] = {}
    for model_name in args.models.split(","):
        results[model_name] = measure(model_name, methods, args.count, args.batch_size, args.repeats)
        for method, row in results[model_name].items():
            print(f"{model_name:16s} {method:16s} {row['samples_per_s']:8.2f} samples/s", flush=True)
    path = write_results(
        args.results,
        {
            "count": args.count,
            "batch_size": args.batch_size,
            "new_tokens": NEW_TOKENS,
            "repeats": args.repeats,
            "methods": METHODS,
            "results": results,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
