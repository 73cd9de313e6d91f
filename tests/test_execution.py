"""Generated code runs isolated and is scored honestly: hostile programs, each bounded in time, must be
contained (the machine, the caller, the network and the environment untouched) and scored correctly."""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from pathlib import Path

import pytest

from adept_cli.evaluation import execution
from adept_cli.evaluation.execution import ExecutionError, check_solution, check_solutions, detect_sandbox

TESTS = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"]
RIGHT = "def add(a, b):\n    return a + b\n"
WRONG = "def add(a, b):\n    return a - b\n"


@pytest.fixture(params=["bubblewrap", "unshare"])
def each_sandbox(request, monkeypatch):
    """Run the hostile programs in each isolation that works here, not only the one adept would pick."""
    sandbox = execution.Sandbox(request.param)
    if execution.shutil.which({"bubblewrap": "bwrap", "unshare": "unshare"}[request.param]) is None:
        pytest.skip(f"{request.param} is not installed")
    if not execution._probe(sandbox):
        pytest.skip(f"{request.param} does not isolate here")
    monkeypatch.setattr(execution, "detect_sandbox", lambda: sandbox)
    return sandbox


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sandbox uses Linux namespaces")
def test_a_sandbox_is_found_on_linux_ci() -> None:
    sandbox = detect_sandbox()
    assert sandbox is not None, "neither bubblewrap nor unshare isolates here: install bubblewrap"
    assert sandbox.kind in ("bubblewrap", "unshare")
    assert "no network" in sandbox.describe() and "read-only filesystem" in sandbox.describe()


@pytest.mark.parametrize("kind", ["bubblewrap", "unshare"])
def test_each_isolation_passes_its_own_probe_where_its_tool_works(kind) -> None:
    tool = {"bubblewrap": "bwrap", "unshare": "unshare"}[kind]
    if execution.shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")
    assert execution._probe(execution.Sandbox(kind)), f"{kind} is installed but does not isolate"


def test_right_and_wrong_solutions() -> None:
    assert check_solution(RIGHT, TESTS).status == "passed"
    result = check_solution(WRONG, TESTS)
    assert result.status == "failed" and "AssertionError" in result.detail


@pytest.mark.parametrize(
    "fake",
    [
        "exit(0)",
        "import sys\nsys.exit(0)",
        "import os\nif __name__ == '__main__':\n    os._exit(0)",
        "raise SystemExit",
        "print('passed')\nimport os\nos._exit(0)",
        "import sys\nprint(sys.stdin.read() if sys.stdin else '')\nexit(0)",
    ],
)
def test_exiting_before_the_tests_is_a_failure_not_a_pass(each_sandbox, fake) -> None:
    result = check_solution(WRONG + fake, TESTS)
    assert result.status == "failed"


def test_the_nonce_is_not_in_the_program_file(each_sandbox) -> None:
    program = "src = open(__file__).read()\nimport re\nprint(' '.join(re.findall('[0-9a-f]{32}', src)))\nexit(0)"
    assert check_solution(program, TESTS).status == "failed"


def test_files_outside_the_scratch_folder_cannot_be_written_or_deleted(each_sandbox, tmp_path) -> None:
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    attack = f"""
import os, shutil
for action in (lambda: open({str(victim)!r}, "w").write("gone"), lambda: os.remove({str(victim)!r}),
               lambda: shutil.rmtree({str(tmp_path)!r}), lambda: os.system("rm -f {victim} && touch {tmp_path}/x")):
    try:
        action()
    except OSError:
        pass
"""
    assert check_solution(RIGHT + attack, TESTS).status == "passed"
    assert victim.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious.txt"]


def test_no_network_not_even_loopback(each_sandbox) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    attack = f"""
import socket
reached = False
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=2).close()
    reached = True
except OSError:
    pass
"""
    try:
        assert check_solution(RIGHT + attack, [*TESTS, "assert not reached"]).status == "passed"
        with pytest.raises(TimeoutError):
            server.accept()
    finally:
        server.close()


def test_the_environment_and_the_callers_processes_are_out_of_reach(each_sandbox, monkeypatch) -> None:
    monkeypatch.setenv("ADEPT_TEST_SECRET", "hunter2-token")
    attack = f"""
import os, signal
leaked = "ADEPT_TEST_SECRET" in os.environ
for pid in os.listdir("/proc"):
    try:
        leaked = leaked or b"hunter2-token" in open(f"/proc/{{pid}}/environ", "rb").read()
    except (OSError, ValueError):
        pass
signalled = False
for target in ({os.getpid()}, os.getppid()):
    try:
        if target > 1:
            os.kill(target, signal.SIGTERM)
            signalled = True
    except OSError:
        pass
"""
    result = check_solution(RIGHT + attack, [*TESTS, "assert not leaked", "assert not signalled"])
    assert result.status == "passed", result.detail  # and this test process is still alive to see it


def test_a_detached_child_dies_with_the_program(each_sandbox) -> None:
    marker = f"{time.time():.6f}"
    attack = f"""
import subprocess
subprocess.Popen(["sleep", "{marker}"], start_new_session=True)
while True:
    pass
"""
    start = time.monotonic()
    assert check_solution(RIGHT + attack, TESTS, timeout=2.0).status == "timeout"
    assert time.monotonic() - start < 10
    time.sleep(0.3)
    assert not [pid for pid in os.listdir("/proc") if pid.isdigit() and marker in _cmdline(pid)]


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def test_a_flood_of_output_is_cut_off(each_sandbox) -> None:
    flood = "import sys\nblock = 'x' * (1 << 20)\nfor _ in range(200):\n    sys.stderr.write(block)\n"
    start = time.monotonic()
    result = check_solution(RIGHT + flood, TESTS)
    assert result.status == "failed" and time.monotonic() - start < 10


def test_memory_hog_fails_without_harming_the_caller() -> None:
    result = check_solution("def add(a, b):\n    x = bytearray(8 * 1024**3)\n    return a + b", TESTS, memory_mb=256)
    assert result.status == "failed" and "MemoryError" in result.detail
    assert check_solution(RIGHT, TESTS).passed  # the caller carries on


def test_limits_are_in_force_inside(each_sandbox) -> None:
    probe = """
import resource
limits = {name: resource.getrlimit(getattr(resource, name)) for name in
          ("RLIMIT_CPU", "RLIMIT_AS", "RLIMIT_FSIZE", "RLIMIT_NOFILE", "RLIMIT_NPROC")}
"""
    checks = [
        "assert limits['RLIMIT_AS'] == (256 * 1024**2,) * 2",
        f"assert limits['RLIMIT_FSIZE'] == ({execution.MAX_FILE_MB} * 1024**2,) * 2",
        f"assert limits['RLIMIT_NOFILE'] == ({execution.MAX_OPEN_FILES},) * 2",
        f"assert limits['RLIMIT_NPROC'] == ({execution.MAX_PROCESSES},) * 2",
        "assert limits['RLIMIT_CPU'] == (4, 4)",
    ]
    assert check_solution(RIGHT + probe, checks, timeout=3.0, memory_mb=256).passed


def test_many_solutions_keep_their_order() -> None:
    items = [(RIGHT, TESTS, ""), ("def add(a, b):\n    return 0", TESTS, "")] * 3
    assert [r.status for r in check_solutions(items, workers=2)] == ["passed", "failed"] * 3


def test_without_isolation_code_runs_only_when_allowed(monkeypatch, caplog) -> None:
    monkeypatch.setattr(execution, "detect_sandbox", lambda: None)
    with pytest.raises(ExecutionError, match="allow_unsafe_exec"):
        check_solution(RIGHT, TESTS)
    with caplog.at_level(logging.WARNING, logger="adept.execution"):
        assert check_solution(RIGHT, TESTS, allow_unsafe_exec=True).passed
    assert "WITHOUT isolation" in caplog.text
    assert check_solution(WRONG + "exit(0)", TESTS, allow_unsafe_exec=True).status == "failed"
