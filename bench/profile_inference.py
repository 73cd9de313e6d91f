"""Where the time of generation goes: ADePT's merged export (l = 120) against PEFT PromptTuning (200).

The prompt-length ratio predicts the speed-up only for the work that grows with the sequence (attention,
the MLPs over prompt positions); work per generated token (the LM head over the vocabulary, sampling
logic, Python overhead of generate) does not shrink with a shorter prompt. This profile splits the two.

    python bench/profile_inference.py               # writes bench/results/profile_inference.txt
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, load_benchmark_model  # noqa: E402
from inference_speed import NEW_TOKENS, build, label, sst2_batches  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--count", type=int, default=32, help="SST-2 validation sentences, one batch")
    parser.add_argument("--rows", type=int, default=12)
    args = parser.parse_args()
    torch.manual_seed(0)
    base, tokenizer = load_benchmark_model(args.model)
    _, (batch,) = sst2_batches(base, tokenizer, args.count, args.count)
    report = [f"model {args.model}, one batch of {args.count} SST-2 sentences, {NEW_TOKENS} new tokens\n"]
    with tempfile.TemporaryDirectory() as workdir:
        for method in ("adept-merged120", "peft-pt200"):
            model = build(method, copy.deepcopy(base), tokenizer, Path(workdir)).eval()
            label(model, batch, tokenizer.pad_token_id)  # warm-up
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                label(model, batch, tokenizer.pad_token_id)
            events = prof.key_averages()
            total = sum(e.self_cpu_time_total for e in events)
            report.append(f"== {method}: {total / 1e3:.1f} ms self CPU time in all ops ==")
            report.append(events.table(sort_by="self_cpu_time_total", row_limit=args.rows))
    text = "\n".join(report)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "profile_inference.txt").write_text(text)


if __name__ == "__main__":
    main()
