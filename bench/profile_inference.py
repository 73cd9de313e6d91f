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
from common import RESULTS, load_benchmark_model, sst2_examples  # noqa: E402
from inference_speed import NEW_TOKENS, build  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--count", type=int, default=32, help="SST-2 validation sentences, one batch")
    parser.add_argument("--rows", type=int, default=12)
    args = parser.parse_args()
    from adept_cli.data import pad_batch

    torch.manual_seed(0)
    base, tokenizer = load_benchmark_model(args.model)
    side = "right" if base.config.is_encoder_decoder else "left"
    rows = [{"input_ids": tokenizer(e.source)["input_ids"]} for e in sst2_examples("validation", args.count)]
    batch = pad_batch(rows, tokenizer.pad_token_id, side=side)
    report = [f"model {args.model}, one batch of {args.count} SST-2 sentences, {NEW_TOKENS} new tokens\n"]
    with tempfile.TemporaryDirectory() as workdir:
        for method in ("adept-merged120", "peft-pt200"):
            model = build(method, copy.deepcopy(base), tokenizer, Path(workdir)).eval()

            def generate(model=model):
                with torch.no_grad():
                    model.generate(
                        **batch,
                        max_new_tokens=NEW_TOKENS,
                        min_new_tokens=NEW_TOKENS,
                        do_sample=False,
                        pad_token_id=tokenizer.pad_token_id,
                    )

            generate()  # warm-up
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                generate()
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
