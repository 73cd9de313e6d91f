"""SST-2 with the embedded SmolLM2-135M-Instruct, its chat template on and off: zero-shot (the base model
alone, generation and rank scoring) and trained (ADePT, the CPU recipe, generation), on the same test
rows. Each number is a plain `adept eval` / `adept train` whose JSON is collected.

    python bench/chat_template.py                       # 200 test rows, 100 training steps
    python bench/chat_template.py --test-limit 436 --steps 300 --runs-dir bench/runs/chat
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BENCH, write_results  # noqa: E402

RECIPE = BENCH.parent / "recipes" / "cpu" / "smollm2-sst2.yaml"
TEMPLATES = ("none", "auto")


def adept(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "adept_cli", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"adept {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout) if done.stdout.strip().startswith("{") else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--test-limit", type=int, default=200)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--runs-dir", type=Path, default=BENCH / "runs" / "chat-template")
    args = parser.parse_args()
    rows = []
    for template in TEMPLATES:
        for scoring in ("generate", "rank"):
            result = adept(
                "eval", "--model", "smollm2-135m", "--task", "sst2", "--split", "test", "--limit", str(args.test_limit),
                "--scoring", scoring, "--chat-template", template, "--json",
            )  # fmt: skip
            rows.append({"model": "zero-shot", "chat_template": template, "scoring": scoring, **_metrics(result)})
            print(json.dumps(rows[-1]), flush=True)
    for template in TEMPLATES:
        run = args.runs_dir / f"adept-{template}"
        adept(
            "train", "--recipe", str(RECIPE), "-o", str(run), "--resume", "auto", f"steps={args.steps}",
            f"chat_template={template}", f"test_limit={args.test_limit}", "scoring=generate",
        )  # fmt: skip
        results = json.loads((run / "results.json").read_text())
        rows.append({"model": "adept", "chat_template": template, "scoring": "generate", **_metrics(results)})
        print(json.dumps(rows[-1]), flush=True)
    path = write_results(
        "chat_template",
        {"task": "sst2", "test_rows": args.test_limit, "steps": args.steps, "recipe": str(RECIPE.name), "rows": rows},
    )
    print(f"wrote {path}")


def _metrics(result: dict) -> dict:
    metrics = result.get("metrics") or result.get("test") or {}
    return {"accuracy": metrics.get("accuracy"), "invalid": metrics.get("invalid")}


if __name__ == "__main__":
    main()
