"""Record one version set's compatibility run (bench/compat.sh) in bench/results/compat.json and redraw the
table in docs/compatibility.md between its markers.

    python bench/compat_table.py --set newest --dir /tmp/adept-compat/newest
    python bench/compat_table.py --table-only      # redraw the table from compat.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import xml.etree.ElementTree as ElementTree
from pathlib import Path

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results" / "compat.json"
DOC = BENCH.parent / "docs" / "compatibility.md"
BEGIN, END = "<!-- compat table: bench/compat_table.py writes this part -->", "<!-- end of compat table -->"
SHOWN = ("python", "torch", "transformers", "peft", "accelerate", "datasets", "bitsandbytes", "gguf")
ORDER = ("oldest", "locked", "newest", "latest")


def read_set(directory: Path) -> dict:
    suite = ElementTree.parse(directory / "junit.xml").getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
    failed = [
        f"{case.get('classname')}::{case.get('name')}"
        for case in suite.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    ]
    ratio_file = directory / "ratio.json"
    ratio = None
    if ratio_file.is_file() and ratio_file.read_text().strip().startswith("{"):
        ratio = json.loads(ratio_file.read_text())["ratios"]
    return {
        "date": datetime.date.today().isoformat(),
        "versions": json.loads((directory / "versions.json").read_text()),
        "passed": counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"],
        "failed": counts["failures"] + counts["errors"],
        "skipped": counts["skipped"],
        "failed_tests": failed,
        "test_seconds": int((directory / "test_seconds").read_text()),
        "shared_prompt_ratios": ratio,
    }


def table(sets: dict) -> str:
    names = [name for name in ORDER if name in sets]
    rows = ["| | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
    rows.append("| date | " + " | ".join(sets[n]["date"] for n in names) + " |")
    for package in SHOWN:
        rows.append(f"| {package} | " + " | ".join(sets[n]["versions"].get(package, "-") for n in names) + " |")
    rows.append(
        "| tests | "
        + " | ".join(
            f"{sets[n]['passed']} passed, {sets[n]['failed']} failed, {sets[n]['skipped']} skipped" for n in names
        )
        + " |"
    )
    for kind, label in (("train", "training step"), ("generate", "generation")):
        cells = []
        for name in names:
            ratios = sets[name]["shared_prompt_ratios"]
            cells.append(f"{ratios[kind]:.2f}x" if ratios else "not measured")
        rows.append(f"| ADePT-60 / ADePT-0, {label} | " + " | ".join(cells) + " |")
    failures = [f"- {name}: {', '.join(sets[name]['failed_tests'])}" for name in names if sets[name]["failed_tests"]]
    return "\n".join(rows) + ("\n\nFailed:\n" + "\n".join(failures) if failures else "")


def write_doc(sets: dict) -> None:
    text = DOC.read_text(encoding="utf-8")
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    DOC.write_text(text[:start] + "\n" + table(sets) + "\n" + text[end:], encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", choices=ORDER)
    parser.add_argument("--dir", type=Path)
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args()
    recorded = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"command": "bash bench/compat.sh", "sets": {}}
    if not args.table_only:
        recorded["sets"][args.set] = read_set(args.dir)
        RESULTS.write_text(json.dumps(recorded, indent=2) + "\n")
    write_doc(recorded["sets"])
    print(f"wrote {RESULTS} and the table in {DOC}")


if __name__ == "__main__":
    main()
