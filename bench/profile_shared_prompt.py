"""Where the time of a shared-prompt training step goes (SmolLM2-135M, real SST-2 batches).

For batch sizes 8 and 32: the step of ADePT with l = 60 (prompt shared), the same step with l = 0, and
the prompt pass alone (forward + backward of the l prompt positions, batch 1). The ideal ratio of a
shared step to the l = 0 step is (l + B n) / (B n) token positions, n the padded row length: the prompt
positions are computed once, but they are computed.

    python bench/profile_shared_prompt.py     # writes bench/results/profile_shared_prompt.txt
"""

from __future__ import annotations

import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, load_benchmark_model, sst2_examples  # noqa: E402


def main() -> None:
    from adept_cli import AdeptConfig, PromptTunedModel
    from adept_cli.encoding import Encoder
    from adept_cli.prompt.sharing import _prompt_pass
    from adept_cli.training.loop import causal_batch, token_loss_sum

    torch.manual_seed(0)
    base, tokenizer = load_benchmark_model("smollm2-135m")
    floor = PromptTunedModel(copy.deepcopy(base), AdeptConfig(prompt_len=0), tokenizer).train()
    shared = PromptTunedModel(base, AdeptConfig(prompt_len=60), tokenizer).train()
    encoder = Encoder(tokenizer, False, max_length=256, max_target_length=16)
    features = [encoder.training_features(e) for e in sst2_examples("train", 32 * 6)]
    lines = [__doc__.strip().splitlines()[0], ""]
    for batch_size in (8, 32):
        times: dict[str, list[float]] = {"shared l=60": [], "l=0": [], "prompt pass alone": []}
        positions = []
        for step in range(5):
            rows = features[step * batch_size : (step + 1) * batch_size]
            batch = causal_batch(rows, tokenizer.pad_token_id, True)
            positions.append(batch["input_ids"].numel())
            for name, model in (("shared l=60", shared), ("l=0", floor)):
                start = time.perf_counter()
                token_loss_sum(model, model, batch, False).backward()
                times[name].append(time.perf_counter() - start)
            start = time.perf_counter()
            layers = _prompt_pass(shared, "default")
            sum(k.sum() + v.sum() for k, v in layers).backward()
            times["prompt pass alone"].append(time.perf_counter() - start)
        median = {name: statistics.median(values[1:]) for name, values in times.items()}  # first: warm-up
        content = statistics.mean(positions[1:])
        ideal = (60 + content) / content
        lines += [
            f"batch {batch_size}: {content:.0f} content positions per step (padded), ideal ratio "
            f"(60 + {content:.0f}) / {content:.0f} = {ideal:.2f}",
        ]
        lines += [f"  {name:18s} {value:.3f} s" for name, value in median.items()]
        lines += [
            f"  shared / l=0 = {median['shared l=60'] / median['l=0']:.2f}; "
            f"(l=0 + prompt pass alone) / l=0 = {(median['l=0'] + median['prompt pass alone']) / median['l=0']:.2f}",
            "",
        ]
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "profile_shared_prompt.txt"
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
