"""Run generated code against its tests in a separate process with a time and a memory limit.

Never inside the calling process: each program runs in a fresh `python -I` in an empty temporary
directory, in its own process group (killed whole on timeout), with its address space capped through
`resource.setrlimit` and its output discarded. This contains loops, memory hogs and crashes; it is not
a security sandbox for hostile code.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

DEFAULT_TIMEOUT = 10.0
DEFAULT_MEMORY_MB = 1024

_PROLOGUE = """\
import resource as _resource
_limit = {memory}
_resource.setrlimit(_resource.RLIMIT_AS, (_limit, _limit))
del _resource, _limit
"""


@dataclass(frozen=True)
class ExecutionResult:
    status: Literal["passed", "failed", "timeout"]
    detail: str = ""  # last line of stderr for failures

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def run_program(program: str, timeout: float = DEFAULT_TIMEOUT, memory_mb: int = DEFAULT_MEMORY_MB) -> ExecutionResult:
    """Run `program` in a child interpreter; passed means exit status 0 within `timeout` seconds."""
    with tempfile.TemporaryDirectory(prefix="adept-exec-") as workdir:
        script = Path(workdir) / "program.py"
        script.write_text(_PROLOGUE.format(memory=memory_mb * 1024 * 1024) + program, encoding="utf-8")
        errors = Path(workdir) / "stderr.txt"
        with open(errors, "wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-I", "-B", str(script)],
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,  # its own process group, so children die with it
                env={"PATH": os.environ.get("PATH", ""), "PYTHONHASHSEED": "0"},
            )
            try:
                code = process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_group(process)
                return ExecutionResult("timeout", f"no result within {timeout:g} s")
            finally:
                _kill_group(process)  # leftover children of a finished program
        if code == 0:
            return ExecutionResult("passed")
        return ExecutionResult("failed", _last_line(errors) or f"exit status {code}")


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


def _last_line(path: Path, limit: int = 4096) -> str:
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        handle.seek(max(handle.tell() - limit, 0))
        lines = handle.read().decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else ""


def check_solution(
    code: str,
    tests: Sequence[str],
    setup: str = "",
    timeout: float = DEFAULT_TIMEOUT,
    memory_mb: int = DEFAULT_MEMORY_MB,
) -> ExecutionResult:
    program = "\n".join([setup, code, "", *tests, ""])
    return run_program(program, timeout=timeout, memory_mb=memory_mb)


def check_solutions(
    items: Sequence[tuple[str, Sequence[str], str]],
    timeout: float = DEFAULT_TIMEOUT,
    memory_mb: int = DEFAULT_MEMORY_MB,
    workers: int | None = None,
) -> list[ExecutionResult]:
    """Check (code, tests, setup) triples in parallel child processes; results in input order."""
    workers = workers or max(os.cpu_count() or 1, 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda item: check_solution(item[0], item[1], item[2], timeout, memory_mb), items))
