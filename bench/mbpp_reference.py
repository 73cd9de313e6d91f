"""The grader against MBPP's own reference solutions: every one of the 974 should pass, and no forged
result should. Also counts the kinds of test (value tests keep the expected value outside the program;
a computed one is worked out by a clean program first, and becomes a statement test where it cannot be).

    python bench/mbpp_reference.py [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import shared_dir, write_results  # noqa: E402

# Each forgery replaces a reference solution's code: it must fail wherever the tests are value tests.
FORGERIES = {
    "eq-always-true": "class _Anything:\n    def __eq__(self, other):\n        return True\n",
    "early-exit": "import os\nos._exit(0)\n",
    "stolen-nonce": "import os\n"
    "nonce = next(c.cell_contents for c in _adept_tests.__closure__ if isinstance(c.cell_contents, str))\n"
    "os.write(1, ('\\n%s end\\n' % nonce).encode())\n"
    "os._exit(0)\n",
}


def forged(code: str, kind: str, function: str) -> str:
    if kind == "eq-always-true":  # the reference, but every call of its function returns _Anything()
        return f"{code}\n{FORGERIES[kind]}\ndef {function}(*args, **kwargs):\n    return _Anything()\n"
    return FORGERIES[kind] + code


def _kind(test) -> str:
    from adept_cli.evaluation.execution import _ValueTest

    if not isinstance(test, _ValueTest):
        return "statement"
    return "value, computed expected" if test.reference else "value, literal expected"


def main() -> None:
    from adept_cli.evaluation.execution import _split, check_solutions, detect_sandbox

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    rows = [json.loads(line) for line in (shared_dir() / "data" / "mbpp" / "mbpp.jsonl").open()]
    kinds = Counter(_kind(_split(test)) for row in rows for test in row["test_list"])
    start = time.perf_counter()
    results = check_solutions([(r["code"], r["test_list"], r["test_setup_code"]) for r in rows], workers=args.workers)
    seconds = time.perf_counter() - start
    failures = {r["task_id"]: result.detail for r, result in zip(rows, results) if not result.passed}
    forgeries = {}
    for kind in FORGERIES:
        items = [
            (forged(r["code"], kind, r["test_list"][0].split("assert", 1)[1].split("(", 1)[0].strip()),
             r["test_list"], r["test_setup_code"])
            for r in rows
        ]  # fmt: skip
        forgeries[kind] = sum(result.passed for result in check_solutions(items, workers=args.workers))
    payload = {
        "sandbox": detect_sandbox().describe(),
        "rows": len(rows),
        "tests": dict(kinds),
        "reference_passed": len(rows) - len(failures),
        "reference_failures": failures,
        "seconds": round(seconds, 1),
        "forged_passed": forgeries,
    }
    print(json.dumps(payload, indent=2))
    print(f"wrote {write_results('mbpp_reference', payload)}")


if __name__ == "__main__":
    main()
