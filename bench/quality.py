"""Quality on real data with the embedded SmolLM2-135M on CPU: zero-shot, PT, DePT, ADePT and LoRA.

The paper's decoder-only budget rules (PT 10 tokens; DePT 7 tokens, rank 3; ADePT 7 tokens, r = 1;
LoRA rank 16), the same steps, batches and seeds for every method, scored by generation + string match
as the paper. Each run is a plain `adept train` whose results.json is collected.

    python bench/quality.py                        # SST-2 and RTE, seeds 1 and 2
    python bench/quality.py --tasks rte --seeds 1,2,3    # replaces RTE's rows, keeps the other tasks'
    python bench/quality.py --steps 2000 --runs-dir bench/runs/quality-2000   # longer runs (a GPU)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BENCH, RESULTS, write_results  # noqa: E402

METHODS = {
    "pt": ["--method", "pt", "prompt_len=10"],
    "dept": ["--method", "dept", "prompt_len=7", "rank=3"],
    "adept": ["--method", "adept", "prompt_len=7", "bottleneck=1"],
    "lora": ["--method", "lora", "rank=16", "lr=5e-4"],
}
COMMON = [
    "batch_size=8",
    "warmup_steps=20",
    "eval_every=100",
    "log_every=50",
    "lr_prompt=1e-2",
    "lr_offsets=1e-3",
    "eval_batch_size=32",
]
PER_TASK = {"sst2": ["validation_limit=200"], "rte": []}


def adept(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "adept_cli", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"adept {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout[done.stdout.index("{") :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="sst2,rte")
    parser.add_argument("--methods", default="zero-shot," + ",".join(METHODS))
    parser.add_argument("--seeds", default="1,2")
    parser.add_argument("--steps", type=int, default=200, help="training steps of every run")
    parser.add_argument("--runs-dir", default=str(BENCH / "runs" / "quality"))
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    common = [f"steps={args.steps}", *COMMON]
    # Tasks run by earlier invocations stay in the results file; each task records its own command and seeds.
    previous = RESULTS / "quality.json"
    earlier = json.loads(previous.read_text()) if previous.is_file() else {}
    results: dict[str, dict] = earlier.get("results", {})
    runs_of: dict[str, dict] = earlier.get("tasks", {})
    for task in args.tasks.split(","):
        results[task] = {}
        runs_of[task] = {"command": " ".join(["python", *sys.argv]), "seeds": seeds}
        for method in args.methods.split(","):
            if method == "zero-shot":
                summary = adept("eval", "--task", task, "--json")
                results[task][method] = {"test": [summary["metrics"]], "trainable_params": 0}
                print(f"{task} zero-shot {summary['metrics']}", flush=True)
                continue
            runs = []
            for seed in seeds:
                out = Path(args.runs_dir) / f"{task}-{method}-s{seed}"
                done = out / "results.json"
                if done.is_file():  # finished earlier: keep it (delete the folder to re-run)
                    steps = yaml.safe_load((out / "config.yaml").read_text())["steps"]
                    if steps != args.steps:
                        raise SystemExit(f"{out} was trained for {steps} steps, not {args.steps}: use --runs-dir")
                    runs.append(json.loads(done.read_text()))
                else:
                    flags = [*METHODS[method], *common, *PER_TASK.get(task, []), f"seed={seed}"]
                    resume = ["--resume", "auto"] if out.exists() else []
                    runs.append(adept("train", "--task", task, "-o", str(out), *resume, "--json", *flags))
                print(f"{task} {method} seed {seed}: {runs[-1]['test']}", flush=True)
            main_metric = runs[0]["main_metric"]
            scores = [r["test"][main_metric] for r in runs]
            results[task][method] = {
                "test": [r["test"] for r in runs],
                "mean": statistics.mean(scores),
                "std": statistics.stdev(scores) if len(scores) > 1 else 0.0,
                "trainable_params": runs[0]["trainable_params"],
                "settings": [*METHODS[method], *common, *PER_TASK.get(task, [])],
            }
    path = write_results("quality", {"model": "smollm2-135m", "tasks": runs_of, "results": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
