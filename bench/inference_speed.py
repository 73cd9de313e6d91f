"""Inference speed on classification-length inputs (the paper's Table 8: SST-2, samples per second).

PT (l = 200), DePT (l = 120) and ADePT (l = 120) with r at the budget of PT-200, the ADePT merged export
(plain transformers + PEFT, no offset network), and PEFT PromptTuning with 200 virtual tokens. Each method
labels the same SST-2 sentences with greedy decoding of two tokens, in batches, in a fresh interpreter.

    python bench/inference_speed.py                  # writes bench/results/inference_speed.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_benchmark_model, run_worker, sst2_examples, synchronize, write_results  # noqa: E402

METHODS = {
    "adept-pt200": "adept PT, l = 200",
    "adept-dept120": "adept DePT, l = 120, r at the budget of PT-200",
    "adept-adept120": "adept ADePT, l = 120, r at the budget of PT-200",
    "adept-merged120": "ADePT l = 120 merged export: plain transformers + PEFT PromptTuning(120), no FFN",
    "peft-pt200": "PEFT PromptTuning, 200 virtual tokens",
}
MODELS = ("smollm2-135m", "t5-base-random")
NEW_TOKENS = 2


def build(method: str, base, tokenizer, workdir: Path):
    from adept_cli import AdeptConfig, DeptConfig, PromptTunedModel, PromptTuningConfig

    dim = base.get_input_embeddings().weight.shape[1]
    budget = 200 * dim
    if method == "peft-pt200":
        from peft import PromptTuningConfig as PeftPromptTuningConfig
        from peft import TaskType, get_peft_model

        task = TaskType.SEQ_2_SEQ_LM if base.config.is_encoder_decoder else TaskType.CAUSAL_LM
        return get_peft_model(base, PeftPromptTuningConfig(task_type=task, num_virtual_tokens=200))
    config = {
        "adept-pt200": PromptTuningConfig(prompt_len=200),
        "adept-dept120": DeptConfig(prompt_len=120, budget=budget, max_length=256),
        "adept-adept120": AdeptConfig(prompt_len=120, budget=budget),
        "adept-merged120": AdeptConfig(prompt_len=120, budget=budget),
    }[method]
    model = PromptTunedModel(base, config, tokenizer)
    if method != "adept-merged120":
        return model
    from adept_cli.export import PROMPT_ADAPTER, _load_merged, export_merged

    with torch.no_grad():  # a trained-looking adapter: non-zero offsets
        for parameter in model.adapter.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.01)
    export_merged(model.eval(), tokenizer, workdir / "merged")
    del model, base
    assert (workdir / "merged" / PROMPT_ADAPTER).is_dir()
    return _load_merged(workdir / "merged", 120)


def worker(model_name: str, method: str, count: int, batch_size: int, repeats: int) -> dict:
    from adept_cli.data import pad_batch

    torch.manual_seed(0)
    base, tokenizer = load_benchmark_model(model_name)
    seq2seq = bool(base.config.is_encoder_decoder)
    with tempfile.TemporaryDirectory() as workdir:
        model = build(method, base, tokenizer, Path(workdir)).eval()
        device = "cuda" if torch.cuda.is_available() else "cpu"
        model.to(device)
        examples = sst2_examples("validation", count)
        ids = [tokenizer(e.source)["input_ids"] for e in examples]
        batches = [
            pad_batch([{"input_ids": row} for row in ids[i : i + batch_size]], tokenizer.pad_token_id,
                      side="right" if seq2seq else "left")
            for i in range(0, len(ids), batch_size)
        ]  # fmt: skip

        def run_all() -> float:
            synchronize()
            start = time.perf_counter()
            with torch.no_grad():
                for batch in batches:
                    model.generate(
                        input_ids=batch["input_ids"].to(device),
                        attention_mask=batch["attention_mask"].to(device),
                        max_new_tokens=NEW_TOKENS,
                        min_new_tokens=NEW_TOKENS,
                        do_sample=False,
                        pad_token_id=tokenizer.pad_token_id,
                    )
            synchronize()
            return time.perf_counter() - start

        run_all()  # warm-up
        seconds = statistics.median(run_all() for _ in range(repeats))
    return {"method": method, "samples_per_s": len(ids) / seconds, "seconds": seconds, "samples": len(ids),
            "mean_input_tokens": sum(map(len, ids)) / len(ids)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--count", type=int, default=128, help="SST-2 validation sentences")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.count, args.batch_size, args.repeats)))
        return
    results: dict[str, dict] = {}
    for model_name in args.models.split(","):
        results[model_name] = {}
        for method in args.methods.split(","):
            flags = ["--count", str(args.count), "--batch-size", str(args.batch_size), "--repeats", str(args.repeats)]
            row = run_worker(Path(__file__), ["--worker", model_name, method, *flags])
            results[model_name][method] = row
            print(f"{model_name:16s} {method:16s} {row['samples_per_s']:8.2f} samples/s", flush=True)
    path = write_results(
        "inference_speed",
        {"count": args.count, "batch_size": args.batch_size, "new_tokens": NEW_TOKENS, "methods": METHODS,
         "results": results},
    )  # fmt: skip
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
