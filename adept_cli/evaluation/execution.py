"""Run generated code against its tests, isolated from the machine, and score it honestly.

Isolation (Linux): each program runs in a fresh `python -I` inside new user, mount, PID, network, IPC
and UTS namespaces: the whole filesystem is mounted read-only except a private scratch folder (its
working directory and TMPDIR); there is no network (not even the host's loopback); it sees only
its own processes, so it cannot signal adept and nothing it starts outlives it (the namespace dies with
its first process); its environment is empty; and it runs under limits on CPU time, address space,
file size, open files and processes. When adept runs as root, the program runs as `nobody` where
that user can run the interpreter.
`bubblewrap` (bwrap) builds the sandbox where it is installed, else `unshare` from util-linux; either
is first checked with a probe program that must fail to write outside its folder. Where neither works
(macOS, namespaces disabled), generated code runs only with an explicit `allow_unsafe_exec`, with a
warning, and never silently unisolated.

Honest scores: a program passes only if the harness reaches the line after the last test and prints a
random nonce the parent chose for this run. The nonce reaches the program on stdin, which the harness
reads and closes before the generated code runs, and it is never written into the program file, so
code that exits early (`exit(0)`, `os._exit(0)`) or prints "passed" is a failure. (In-process code can
still find the nonce by introspecting the harness's objects: a deliberate attack on the grader, which
the sandbox then contains like any other program.)
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import AdeptError

DEFAULT_TIMEOUT = 10.0
DEFAULT_MEMORY_MB = 1024
MAX_FILE_MB = 16  # any file the program writes, its captured stdout / stderr included
MAX_OPEN_FILES = 64
MAX_PROCESSES = 64
NOBODY = 65534
logger = logging.getLogger("adept.execution")


class ExecutionError(AdeptError, RuntimeError):
    """Generated code cannot be executed safely here; the message says what to install or set."""


@dataclass(frozen=True)
class ExecutionResult:
    status: Literal["passed", "failed", "timeout"]
    detail: str = ""  # last line of stderr for failures

    @property
    def passed(self) -> bool:
        return self.status == "passed"


# The harness's first lines: limits, then the nonce from stdin, kept in a closure; stdin is closed
# before any generated code runs.
_PROLOGUE = """\
def _adept_harness():
    import os, resource, sys
    for limit, value in {limits!r}:
        resource.setrlimit(getattr(resource, limit), (value, value))
    nonce = sys.stdin.readline().strip()
    os.close(0)
    sys.stdin = None

    def finished():
        sys.stdout.write("\\n" + nonce + "\\n")
        sys.stdout.flush()

    return finished


_adept_finished = _adept_harness()
del _adept_harness
"""
_EPILOGUE = "\n_adept_finished()\n"


@dataclass(frozen=True)
class Sandbox:
    """How programs are isolated: `kind` is bubblewrap, unshare or none (unsafe, allowed explicitly)."""

    kind: Literal["bubblewrap", "unshare", "none"]
    as_nobody: bool = False

    def describe(self) -> str:
        if self.kind == "none":
            return "NOT isolated (allow_unsafe_exec): generated code can read and change this machine"
        who = ", as nobody" if self.as_nobody else ""
        return (
            f"{self.kind} sandbox{who}: no network, read-only filesystem but a private scratch folder, own PID "
            "namespace, empty environment, limits on CPU, memory, file size, open files and processes"
        )

    def command(self, scratch: Path) -> list[str]:
        """The command that runs `program.py` of `scratch` in this sandbox."""
        python = [sys.executable, "-I", "-B", "program.py"]
        drop = ["setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups"] if self.as_nobody else []
        if self.kind == "bubblewrap":
            return [
                *drop,
                "bwrap",
                "--unshare-all",
                "--die-with-parent",
                "--new-session",
                "--ro-bind", "/", "/",
                "--proc", "/proc",
                "--dev", "/dev",
                "--bind", str(scratch), str(scratch),
                "--clearenv",
                "--setenv", "TMPDIR", str(scratch),
                "--chdir", str(scratch),
                *python,
            ]  # fmt: skip
        if self.kind == "unshare":
            return [
                *drop,
                "unshare",
                "--user",
                "--map-root-user",
                "--mount",
                "--net",
                "--ipc",
                "--uts",
                "--pid",
                "--fork",
                "--kill-child",
                "--mount-proc",
                "sh",
                "-c",
                _UNSHARE_SCRIPT,
                "sandbox",
                str(scratch),
                *python,
            ]
        return python


# Inside the new namespaces: a read-only copy of the mount tree with the scratch folder bound writable
# and a fresh /proc, then chroot into it with an empty environment. Any failed step aborts.
_UNSHARE_SCRIPT = """
set -eu
PATH="/usr/sbin:/sbin:/usr/bin:/bin:$PATH"
scratch=$1; shift
root="$scratch/.root"
mkdir "$root"
mount --rbind / "$root"
awk -v r="$root" '$5 == r || index($5, r "/") == 1 { print $5 " " $6 }' /proc/self/mountinfo |
while read -r point options; do
  flags=ro
  for flag in nosuid nodev noexec; do
    case ",$options," in *",$flag,"*) flags="$flags,$flag";; esac
  done
  mount -o "remount,bind,$flags" "$point"
done
mount --bind "$scratch" "$root$scratch"
mount -t proc proc "$root/proc"
cd "$root"
exec env -i TMPDIR="$scratch" "$(command -v chroot)" "$root" sh -c 'cd "$TMPDIR" && exec "$@"' sandbox "$@"
"""


@functools.cache
def detect_sandbox() -> Sandbox | None:
    """The first isolation that works here, checked by running a probe in it (cached per process)."""
    if not sys.platform.startswith("linux"):
        return None
    as_nobody = os.geteuid() == 0 and shutil.which("setpriv") is not None
    for kind, tool in (("bubblewrap", "bwrap"), ("unshare", "unshare")):
        if shutil.which(tool) is None:
            continue
        for nobody in (True, False) if as_nobody else (False,):
            sandbox = Sandbox(kind, nobody)
            if _probe(sandbox):
                return sandbox
    return None


_PROBE = """\
import os, socket
os.makedirs("inside", exist_ok=True)
open("inside/ok", "w").write("ok")
for path in {outside!r}:
    try:
        open(path, "w").write("escaped")
    except OSError:
        pass
try:
    socket.create_connection(("127.0.0.1", 9), timeout=1)
except OSError:
    pass
if os.getpid() > 10 or "PATH" in os.environ or "HOME" in os.environ or not os.environ.get("TMPDIR"):
    raise SystemExit(4)
"""


def _probe(sandbox: Sandbox) -> bool:
    """A probe must run, write in its folder, see a fresh PID namespace and an empty environment, and
    fail to write anywhere else (the system's /tmp, the home folder, the root folder)."""
    with _scratch() as scratch:
        token = secrets.token_hex(8)
        outside = [
            scratch.parent / f"adept-probe-{token}",
            Path.home() / f".adept-probe-{token}",
            Path(f"/adept-probe-{token}"),
        ]
        try:
            result = _run(sandbox, scratch, _PROBE.format(outside=[str(p) for p in outside]), [], 20.0, 512)
            escaped = [path for path in outside if path.exists()]
        finally:
            for path in outside:
                path.unlink(missing_ok=True)
        return result.passed and not escaped and (scratch / "inside" / "ok").is_file()


class _scratch:
    """A private temporary folder the sandboxed program may write (owned by nobody when it runs as nobody)."""

    def __enter__(self) -> Path:
        self.path = Path(tempfile.mkdtemp(prefix="adept-exec-"))
        if os.geteuid() == 0:  # the program may run as nobody
            os.chmod(self.path, 0o777)
        return self.path

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def sandbox_for(allow_unsafe_exec: bool) -> Sandbox:
    """The sandbox to run generated code in, or an error saying how to get one."""
    sandbox = detect_sandbox()
    if sandbox is not None:
        return sandbox
    if not allow_unsafe_exec:
        raise ExecutionError(
            "generated code cannot be executed in isolation here: neither bubblewrap (bwrap) nor unshare with "
            "user namespaces works on this machine. Install bubblewrap (e.g. apt-get install bubblewrap) or "
            "enable unprivileged user namespaces; or, to run generated code unisolated at your own risk, set "
            "allow_unsafe_exec: true (adept eval --allow-unsafe-exec)"
        )
    logger.warning(
        "executing generated code WITHOUT isolation (allow_unsafe_exec): it can read and change this machine"
    )
    return Sandbox("none")


def _limits(timeout: float, memory_mb: int) -> list[tuple[str, int]]:
    return [
        ("RLIMIT_CPU", max(int(timeout) + 1, 1)),
        ("RLIMIT_AS", memory_mb * 1024 * 1024),
        ("RLIMIT_FSIZE", MAX_FILE_MB * 1024 * 1024),
        ("RLIMIT_NOFILE", MAX_OPEN_FILES),
        ("RLIMIT_NPROC", MAX_PROCESSES),
    ]


def _run(
    sandbox: Sandbox, scratch: Path, body: str, tests: Sequence[str], timeout: float, memory_mb: int
) -> ExecutionResult:
    """`body` then `tests` as one program in `scratch`; passed only if the harness printed the nonce."""
    nonce = secrets.token_hex(16)
    program = "\n".join([_PROLOGUE.format(limits=_limits(timeout, memory_mb)), body, "", *tests, _EPILOGUE])
    (scratch / "program.py").write_text(program, encoding="utf-8")
    stdout_path, stderr_path = scratch / ".stdout", scratch / ".stderr"
    with open(stdout_path, "wb") as stdout, open(stderr_path, "wb") as stderr:
        process = subprocess.Popen(
            sandbox.command(scratch),
            cwd=scratch,
            stdin=subprocess.PIPE,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,  # its own process group: killed whole on timeout
            env={} if sandbox.kind == "none" else {"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        )
        try:
            process.stdin.write((nonce + "\n").encode())
            process.stdin.close()
        except BrokenPipeError:
            pass
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return ExecutionResult("timeout", f"no result within {timeout:g} s")
        finally:
            _kill_group(process)
    if code == 0 and nonce in _tail(stdout_path).split():
        return ExecutionResult("passed")
    if code == 0:
        return ExecutionResult("failed", "the program ended before its tests finished")
    return ExecutionResult("failed", _last_line(_tail(stderr_path)) or f"exit status {code}")


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


def _tail(path: Path, limit: int = 4096) -> str:
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        handle.seek(max(handle.tell() - limit, 0))
        return handle.read().decode("utf-8", "replace")


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""


def check_solution(
    code: str,
    tests: Sequence[str],
    setup: str = "",
    timeout: float = DEFAULT_TIMEOUT,
    memory_mb: int = DEFAULT_MEMORY_MB,
    allow_unsafe_exec: bool = False,
) -> ExecutionResult:
    """Run `setup`, `code`, then each test statement; passed only if every test ran to the end."""
    sandbox = sandbox_for(allow_unsafe_exec)
    with _scratch() as scratch:
        return _run(sandbox, scratch, "\n".join([setup, code]), tests, timeout, memory_mb)


def check_solutions(
    items: Sequence[tuple[str, Sequence[str], str]],
    timeout: float = DEFAULT_TIMEOUT,
    memory_mb: int = DEFAULT_MEMORY_MB,
    workers: int | None = None,
    allow_unsafe_exec: bool = False,
) -> list[ExecutionResult]:
    """Check (code, tests, setup) triples in parallel sandboxes; results in input order."""
    sandbox_for(allow_unsafe_exec)  # fail (or warn) once, before any program runs
    workers = workers or max(os.cpu_count() or 1, 1)

    def check(item: tuple[str, Sequence[str], str]) -> ExecutionResult:
        return check_solution(item[0], item[1], item[2], timeout, memory_mb, allow_unsafe_exec)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(check, items))
