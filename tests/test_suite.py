"""The suite's own promises: a test that lacks a feature skips, saying which, except where ADEPT_REQUIRE
(CI) lists it, where the skip is a failure naming the missing piece, for a single test and for a module
that skips as a whole."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import REPO

pytestmark = pytest.mark.slow  # every test here runs pytest in a process of its own


def _pytest(*args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key != "ADEPT_REQUIRE"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=REPO,
        env={**environment, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_missing_feature_skips_but_fails_where_ci_requires_it() -> None:
    absent = {"ADEPT_VLLM_PYTHON": "/nonexistent/python"}
    skipped = _pytest("tests/test_vllm.py", "-rs", **absent)
    assert skipped.returncode == 0 and "skipped" in skipped.stdout, skipped.stdout[-2000:]
    assert "[needs vllm]" in skipped.stdout
    required = _pytest("tests/test_vllm.py", **absent, ADEPT_REQUIRE="sandbox,vllm")
    assert required.returncode == 1, required.stdout[-2000:]
    assert "ADEPT_REQUIRE promises vllm" in required.stdout and "skipped" not in required.stdout


def test_a_module_that_skips_as_a_whole_fails_where_ci_requires_it(tmp_path: Path) -> None:
    """test_quantization.py skips as a whole without bitsandbytes (here: a stand-in that cannot import)."""
    fake = tmp_path / "bitsandbytes"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('not installed here')\n")
    path = {"PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    skipped = _pytest("tests/test_quantization.py", "-rs", **path)
    assert skipped.returncode in (0, 5), skipped.stdout[-2000:]  # 5: no test ran, the module skipped whole
    assert "[needs bitsandbytes]" in skipped.stdout
    required = _pytest("tests/test_quantization.py", **path, ADEPT_REQUIRE="bitsandbytes")
    assert required.returncode != 0, required.stdout[-2000:]
    assert "ADEPT_REQUIRE promises bitsandbytes" in required.stdout


def test_an_unknown_required_feature_is_refused() -> None:
    done = _pytest("tests/test_suite.py", "--co", ADEPT_REQUIRE="sandbox,vlm")
    assert done.returncode != 0 and "ADEPT_REQUIRE names unknown features ['vlm']" in done.stdout + done.stderr
