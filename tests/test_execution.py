"""Generated code runs isolated and is scored honestly: hostile programs, each bounded in time, must be
contained (the machine, the caller, the network and the environment untouched) and scored correctly."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adept_cli.evaluation import execution
from adept_cli.evaluation import sandbox as sandboxes
from adept_cli.evaluation.execution import ExecutionError, check_solution, check_solutions, detect_sandbox

from .helpers import data_dir, missing, read_jsonl, wait_until

TESTS = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"]
# the harness's secret dug out of its objects (the run's nonce: the one string its test runner holds)
STEAL_NONCE = "nonce = next(c.cell_contents for c in _adept_tests.__closure__ if isinstance(c.cell_contents, str))\n"
RIGHT = "def add(a, b):\n    return a + b\n"
WRONG = "def add(a, b):\n    return a - b\n"


@pytest.fixture(params=["bubblewrap", "unshare"])
def each_sandbox(request, monkeypatch):
    """Run the hostile programs in each isolation that works here, not only the one adept would pick."""
    chosen = sandboxes.Sandbox(request.param, as_nobody=os.geteuid() == 0)
    if sandboxes.shutil.which({"bubblewrap": "bwrap", "unshare": "unshare"}[request.param]) is None:
        missing("sandbox", f"{request.param} is not installed")
    if not sandboxes.probe(chosen):
        missing("sandbox", f"{request.param} does not isolate here")
    monkeypatch.setattr(sandboxes, "detect_sandbox", lambda: chosen)
    return chosen


def test_a_sandbox_is_found_on_linux() -> None:
    if not sys.platform.startswith("linux"):
        missing("sandbox", "the sandbox uses Linux namespaces")
    sandbox = detect_sandbox()
    assert sandbox is not None, "neither bubblewrap nor unshare isolates here: install bubblewrap"
    assert sandbox.kind in ("bubblewrap", "unshare")
    assert "no network" in sandbox.describe() and "sees only the Python installation" in sandbox.describe()


@pytest.mark.parametrize("kind", ["bubblewrap", "unshare"])
def test_each_isolation_passes_its_own_probe_where_its_tool_works(kind) -> None:
    tool = {"bubblewrap": "bwrap", "unshare": "unshare"}[kind]
    if sandboxes.shutil.which(tool) is None:
        missing("sandbox", f"{tool} is not installed")
    chosen = sandboxes.Sandbox(kind, as_nobody=os.geteuid() == 0)
    assert sandboxes.probe(chosen), f"{kind} is installed but does not isolate"


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


@pytest.mark.slow
def test_a_detached_child_dies_with_the_program(each_sandbox) -> None:
    marker = f"{time.time():.6f}"
    attack = f"""
import subprocess
import time
subprocess.Popen(["sleep", "{marker}"], start_new_session=True)
while True:  # asleep, so no CPU limit ends it: only the sandbox's own end can
    time.sleep(1)
"""
    start = time.monotonic()
    assert check_solution(RIGHT + attack, TESTS, timeout=2.0).status == "timeout"
    assert time.monotonic() - start < 10  # the 2 s timeout, and a margin for a loaded machine
    survivors = lambda: [pid for pid in os.listdir("/proc") if pid.isdigit() and marker in _cmdline(pid)]  # noqa: E731
    wait_until(lambda: not survivors(), "the detached child to die with the program", timeout=10)


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
    monkeypatch.setattr(sandboxes, "detect_sandbox", lambda: None)
    with pytest.raises(ExecutionError, match="allow_unsafe_exec"):
        check_solution(RIGHT, TESTS)
    with caplog.at_level(logging.WARNING, logger="adept.execution"):
        assert check_solution(RIGHT, TESTS, allow_unsafe_exec=True).passed
    assert "WITHOUT isolation" in caplog.text
    assert check_solution(WRONG + "exit(0)", TESTS, allow_unsafe_exec=True).status == "failed"


# Program text the hostile tests share: which of `places` it can write, and its capabilities.
WRITABLE_PLACES = """
import os
writable = []
for place in {places!r}:
    try:
        with open(os.path.join(place, "adept-write-probe"), "wb") as handle:
            handle.write(b"x")
        writable.append(place)
    except OSError:
        pass
"""
CAPABILITIES = """
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
capabilities = int(status["CapEff"], 16) | int(status["CapPrm"], 16)
"""


def test_what_the_program_sees_cannot_be_made_writable(each_sandbox) -> None:
    """Capabilities would let a program remount its read-only view writable (as bwrap run by root once
    allowed): every way to try it must fail, and the interpreter's own folder stay untouched."""
    target = Path(sys.prefix) / f"adept-escape-{time.time_ns()}"
    attack = f"""
import ctypes, os
target = {str(target)!r}
libc = ctypes.CDLL(None, use_errno=True)
MS_REMOUNT, MS_BIND = 32, 4096
for point in ("/", {sys.prefix!r}, "/tmp"):
    libc.mount(b"none", point.encode(), None, MS_REMOUNT | MS_BIND, None)
os.system("mount -o remount,rw,bind / ; mount -o remount,rw,bind {sys.prefix} ; "
          "unshare -Urm sh -c 'mount -o remount,rw,bind {sys.prefix} && touch {target}' ; touch {target}")
wrote = os.path.exists(target)
uid = os.geteuid()
"""
    checks = ["assert wrote == False", "assert capabilities == 0"]
    if each_sandbox.as_nobody:
        checks.append(f"assert uid == {sandboxes.NOBODY}")
    try:
        result = check_solution(RIGHT + attack + CAPABILITIES, [*TESTS, *checks])
        assert result.passed, result.detail
        assert not target.exists()
    finally:
        target.unlink(missing_ok=True)


def test_the_program_sees_only_the_interpreter_not_data_or_home(each_sandbox, tmp_path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("token")
    answers = data_dir() / "mbpp" / "test.jsonl"  # the expected values of every MBPP test
    hidden = [str(secret), str(tmp_path), str(Path(__file__).resolve()), str(answers.resolve()), "/etc/passwd"]
    attack = f"""
import os
seen = sorted(path for path in {hidden!r} if os.path.exists(path))
"""
    result = check_solution(RIGHT + attack, [*TESTS, "assert seen == []"])
    assert result.passed, result.detail


@pytest.mark.parametrize(
    "forgery",
    [
        # an object equal to everything
        "class Anything:\n    def __eq__(self, other):\n        return True\n    __hash__ = object.__hash__\n"
        "def add(a, b):\n    return Anything()\n",
        # a builtin subclass that lies in __eq__
        "class Liar(int):\n    def __eq__(self, other):\n        return True\n    __hash__ = int.__hash__\n"
        "def add(a, b):\n    return Liar(a - b)\n",
        # a wrong solution whose failures are turned into a clean exit
        "import atexit, os\natexit.register(lambda: os._exit(0))\ndef add(a, b):\n    return a - b\n",
        # the harness's secret, dug out of its objects: the end mark without any test's value
        STEAL_NONCE + "import os\nos.write(1, ('\\n%s end\\n' % nonce).encode())\nos._exit(0)\n",
        # the same secret used to report a value before the real one
        STEAL_NONCE + 'import os\nos.write(1, (\'\\n%s 1 ["int", "0x0"]\\n\' % nonce).encode())\n' + WRONG,
    ],
    ids=["eq-always-true", "int-subclass", "atexit-exit-0", "stolen-nonce-end", "stolen-nonce-record"],
)
def test_forged_results_fail_value_tests(forgery) -> None:
    result = check_solution(forgery, TESTS)
    assert result.status == "failed", result


VALUE_SETUP = "import collections\nfrom decimal import Decimal\nfrom fractions import Fraction\n"


@pytest.mark.parametrize(
    ("returned", "literal"),
    [
        ("collections.Counter('aab')", "{'a': 2, 'b': 1}"),
        ("collections.OrderedDict(a=1)", "{'a': 1}"),
        ("collections.namedtuple('P', 'x y')(1, 2)", "(1, 2)"),
        ("[1, 2]", "(1, 2)"),
        ("3.0", "3"),
        ("True", "1"),
        ("frozenset({1, 2})", "{1, 2}"),
        ("{frozenset({1})}", "{frozenset({1})}"),
        ("bytearray(b'ab')", "b'ab'"),
        ("Fraction(1, 2)", "0.5"),
        ("Fraction(1, 3)", "0.3333333333333333"),
        ("Decimal('0.5')", "0.5"),
        ("0.1 + 0.2", "0.3"),
        ("{1: [1, (2, None)], 'k': {'x'}}", "{1: [1, (2, None)], 'k': {'x'}}"),
        ("map(str, [1])", "['1']"),
        ("1 + 2j", "(1+2j)"),
        ("'é' * 3", "'ééé'"),
        ("2 ** 200", str(2**200)),
        ("float('nan')", "0.0"),
        ("None", "None"),
        ("range(2)", "[0, 1]"),
    ],
)
def test_value_tests_judge_as_python_does(returned, literal) -> None:
    namespace: dict = {}
    exec(VALUE_SETUP, namespace)
    python_says = eval(returned, namespace) == eval(literal, namespace)
    result = check_solution(f"def f():\n    return {returned}\n", [f"assert f() == {literal}"], setup=VALUE_SETUP)
    assert result.passed == python_says, result


@pytest.mark.parametrize(
    "record",
    ['["decimal", "sNaN"]', '["fraction", "0x1", "0x0"]', '["set", [["list", []]]]', '["int", 5]', "[[[[" * 400],
)
def test_a_malformed_or_hostile_record_is_a_failure_not_a_crash(record) -> None:
    """Records are the program's output: one that cannot be rebuilt or compared fails that program only."""
    forgery = (
        STEAL_NONCE + "import os\n"
        f"os.write(1, ('\\n%s 0 {record}\\n%s end\\n' % (nonce, nonce)).encode())\nos._exit(0)\n"
    )
    result = check_solution(forgery, ["assert add(1, 2) == 3"])
    assert result.status == "failed" and result.detail.startswith("test 1 (add(1, 2)): "), result


@pytest.mark.parametrize(
    "returned",
    ["10 ** 5000", "-(10 ** 5000)", "[1, 10 ** 5000]", "Fraction(1 << 2_000_000, 3)", "(1 << (1 << 22))"],
    ids=["big-int", "big-negative", "big-int-inside", "huge-fraction", "huge-int"],
)
def test_a_huge_wrong_value_fails_that_program_quickly(returned) -> None:
    """Once a lost evaluation: repr() of an int over 4,300 digits raised outside the grader's guard, and a
    Fraction of 2-Mbit parts tied up the parent for a minute."""
    begin = time.monotonic()
    program = f"from fractions import Fraction\ndef add(a, b):\n    return {returned}\n"
    results = check_solutions([(program, TESTS, ""), (RIGHT, TESTS, "")])
    assert results[0].status == "failed" and results[1].passed, results
    assert len(results[0].detail) <= 300
    assert time.monotonic() - begin < 20


@pytest.mark.parametrize("kind", ["set", "dict"])
def test_values_whose_keys_all_hash_alike_fail_that_program_not_the_grader(monkeypatch, kind) -> None:
    """80,000 integers that all hash alike (multiples of 2**61 - 1) once took the grader 74-129 s to rebuild,
    outside the program's own 10 s. The program writes them cheaply as a forged record; rebuilding them
    now stops at the grader's budget (shortened here) and fails the test."""
    monkeypatch.setattr(execution, "JUDGE_SECONDS", 0.5)
    key = "['int', hex(i * (2**61 - 1))]"
    items = f"[{key} for i in range(1, 80001)]" if kind == "set" else f"[[{key}, None] for i in range(1, 80001)]"
    forgery = STEAL_NONCE + "import json, os\n"
    forgery += f"record = json.dumps(['list', [['{kind}', {items}]]])\n"
    forgery += "os.write(1, ('\\n%s 0 %s\\n%s end\\n' % (nonce, record, nonce)).encode())\nos._exit(0)\n"
    expected = "{1: None}" if kind == "dict" else "{1}"
    begin = time.monotonic()
    result = check_solution(forgery, [f"assert add(1, 2) == {expected}"])
    assert result.status == "failed" and "took over 0.5 s to rebuild" in result.detail, result
    assert time.monotonic() - begin < 30  # the rebuild alone once took over a minute


def test_a_wrong_value_is_named_with_what_the_program_returned() -> None:
    result = check_solution(WRONG, TESTS)
    assert result.detail == "AssertionError: add(1, 2) == 3 (got -1)"
    result = check_solution("class Box:\n    pass\ndef add(a, b):\n    return Box()\n", TESTS)
    assert result.status == "failed" and "type Box" in result.detail and "plain data" in result.detail


STATEMENT_TESTS = ["assert add(1, 2) == add(2, 1)", "assert add(1, 2) > 0", "assert not add(0, 0)",
                   "assert isinstance(add(1, 2), int)"]  # fmt: skip


# Records that pass two truth tests and a statement test, written with the nonce dug out of the harness
FORGED_TRUTHS = (
    STEAL_NONCE
    + r"""import os
records = ['[["bool", true]]', '[["bool", true]]', '[]']
lines = ["\n%s %d [\"list\", %s]\n" % (nonce, i, record) for i, record in enumerate(records)]
os.write(1, ("".join(lines) + "\n%s end\n" % nonce).encode())
os._exit(0)
"""
)


def test_a_program_whose_tests_are_all_of_forgeable_kinds_is_marked(each_sandbox) -> None:
    """Truth and statement tests can be passed by a program that digs the run's nonce out of the harness;
    value tests cannot. Every result says whether its program had only such tests (MBPP's reports count
    them: none)."""
    truths = ["assert add(1, 1)", "assert add(2, 2)", "check(add)"]
    forged = check_solution(WRONG + FORGED_TRUTHS, truths)
    assert forged.passed and forged.forgeable  # what the docs and the reports say can happen
    assert check_solution(RIGHT, TESTS).forgeable is False
    assert check_solution(WRONG + FORGED_TRUTHS, [*truths, *TESTS]).status == "failed"  # a value test holds
    assert check_solution(RIGHT, [*truths[:2], *TESTS]).forgeable is False


@pytest.mark.parametrize(
    "forgery",
    [
        # the tests run early, then a clean exit before anything is judged
        WRONG + "import os\n_adept_tests(globals())\nos._exit(0)\n",
        # failures turned into a clean exit by an exception hook
        "import os, sys\nsys.excepthook = lambda *args: os._exit(0)\n" + WRONG,
        # records written through the harness's own function, then a clean exit
        WRONG + "import os\nfor i in range(8):\n    _adept_report(i, [3, 3])\nos._exit(0)\n",
        # the same records, the program going on to its real tests
        WRONG + "for i in range(8):\n    _adept_report(i, [True])\n",
    ],
    ids=["tests-early-then-exit", "excepthook-exit-0", "reported-then-exit", "reported-twice"],
)
def test_forged_results_fail_statement_tests(forgery) -> None:
    """Comparisons and conditions are judged here from the operands the harness reports after running each
    test; the program never sees the tests, and cannot end them early, skip one or report one twice."""
    assert check_solution(RIGHT, STATEMENT_TESTS).passed
    result = check_solution(forgery, STATEMENT_TESTS)
    assert result.status == "failed", result


def test_a_failed_comparison_names_both_operands() -> None:
    result = check_solution(WRONG, ["assert add(1, 2) == add(2, 1)"])
    assert result.detail == "AssertionError: assert add(1, 2) == add(2, 1) (left -1, right 1)", result


def test_statement_tests_run_in_the_program_beside_value_tests() -> None:
    statements = ["assert add(1, 2) == add(2, 1)", "assert isinstance(add(1, 2), int)", *TESTS]
    assert check_solution(RIGHT, statements).passed
    assert check_solution("def add(a, b):\n    return float(a + b)\n", statements).status == "failed"
    result = check_solution(RIGHT, [*TESTS, "assert add(2, 2) == add(1, 2)"])
    assert result.status == "failed" and "AssertionError" in result.detail


ANYTHING = "class Anything:\n    def __eq__(self, other):\n        return True\n    __hash__ = object.__hash__\n"


def test_an_expected_value_computed_without_the_solution_is_computed_by_a_clean_program() -> None:
    """`assert f(x) == sys.getsizeof(x)` (MBPP 596): the right side is computed by a program without the
    solution's code, so the test is a value test and a forgery fails it."""
    row = next(r for r in read_jsonl(data_dir() / "mbpp" / "mbpp.jsonl") if r["task_id"] == 596)
    assert check_solution(row["code"], row["test_list"]).passed
    forged = f"{ANYTHING}def tuple_size(items):\n    return Anything()\n"
    result = check_solution(forged, row["test_list"])
    assert result.status == "failed" and "type Anything" in result.detail
    wrong = check_solution("def tuple_size(items):\n    return len(items)\n", row["test_list"])
    assert wrong.status == "failed" and wrong.detail.startswith("AssertionError: tuple_size(")
    assert (
        check_solution(ANYTHING + "def add(a, b):\n    return Anything()\n", ["assert add(1, 2) == len('abc')"]).status
        == "failed"
    )


def test_mbpp_reference_solutions_pass() -> None:
    """30 reference solutions, and the two whose setup builds trees of the solution's own Node class
    (so the setup runs after the solution); bench/mbpp_reference.py checks all 974."""
    every = read_jsonl(data_dir() / "mbpp" / "mbpp.jsonl")
    rows = every[:30] + [row for row in every if row["test_setup_code"].strip()]
    assert len(rows) == 32
    items = [(row["code"], row["test_list"], row["test_setup_code"]) for row in rows]
    results = check_solutions(items, workers=2)
    failed = {row["task_id"]: result.detail for row, result in zip(rows, results) if not result.passed}
    assert not failed


def test_the_program_cannot_make_a_user_namespace(each_sandbox) -> None:
    """In a user namespace of its own the program would hold every capability again: it could mount a
    tmpfs and fill this machine's memory (seen: 1.5 GB). Neither the system call nor a tool may make one."""
    attack = """
import ctypes, os, subprocess
libc = ctypes.CDLL(None, use_errno=True)
direct = libc.unshare(0x10000000 | 0x00020000)  # CLONE_NEWUSER | CLONE_NEWNS
forked = os.fork()
if forked == 0:
    os._exit(0 if libc.unshare(0x10000000) == 0 else 1)
child = os.waitstatus_to_exitcode(os.waitpid(forked, 0)[1])
tool = subprocess.run(["unshare", "-Urm", "true"], capture_output=True).returncode
"""
    checks = ["assert direct == -1", "assert child == 1", "assert tool != 0"]
    result = check_solution(RIGHT + attack, [*TESTS, *checks])
    assert result.passed, result.detail


# What a program may try to leave its sandbox or hold memory outside its bound: reach another process of the
# sandbox (bubblewrap's own PID 1 once ran without the filter and could be made to unshare for the program),
# make namespaces or mounts, or park memory where no per-process bound counts it. Each must fail.
ESCAPES = """
import ctypes, os, socket
libc = ctypes.CDLL(None, use_errno=True)
others = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()]
ptraced = [libc.ptrace(16, pid, None, None) for pid in [1, *others]]  # PTRACE_ATTACH
traceme = libc.ptrace(0, 0, None, None)
memory_of_others = []
for pid in others:
    try:
        open("/proc/%d/mem" % pid, "r+b").close()
        memory_of_others.append(pid)
    except OSError:
        pass
nested = libc.unshare(0x10000000 | 0x00020000)
mounted = libc.mount(b"none", b".", b"tmpfs", 0, b"size=4g")
memfd = libc.memfd_create(b"hoard", 0)
shared = libc.shmget(0, 1 << 20, 0o1000 | 0o600)
queues = libc.msgget(0, 0o1000 | 0o600)
pair = libc.socketpair(1, 1, 0, (ctypes.c_int * 2)())
try:
    socket.socket(socket.AF_UNIX).close()
    unix = True
except OSError:
    unix = False
uring = libc.syscall(425, 8, (ctypes.c_char * 120)())  # io_uring_setup, the same number on both
forked = os.fork()
if forked == 0:
    os._exit(0)
child = os.waitstatus_to_exitcode(os.waitpid(forked, 0)[1])
"""
ESCAPE_CHECKS = [
    "assert os.getpid() == 1 and others == []",  # alone in its PID namespace: nothing to reach
    "assert ptraced == [-1] and traceme == -1 and memory_of_others == []",
    "assert nested == -1 and mounted == -1",
    "assert memfd == -1 and shared == -1 and queues == -1 and pair == -1 and not unix and uring == -1",
    "assert child == 0",  # a plain fork still works
]


def test_the_program_can_reach_no_other_process_and_park_no_memory_outside_its_bound(each_sandbox) -> None:
    result = check_solution(RIGHT + ESCAPES, [*TESTS, *ESCAPE_CHECKS])
    assert result.passed, result.detail


def test_the_program_cannot_fill_this_machines_disk(each_sandbox) -> None:
    """It writes in a tmpfs of WORK_MB: a loop of 16 MiB files stops there, whatever time is left."""
    attack = """
import os
written = 0
try:
    for index in range(64):
        with open(f"fill-{index}", "wb") as handle:
            handle.write(b"x" * (15 * 2**20))
        written += 15 * 2**20
except OSError:
    pass
"""
    checks = [f"assert written <= {sandboxes.WORK_MB * 2**20}", "assert written >= 30 * 2**20"]
    result = check_solution(RIGHT + attack, [*TESTS, *checks], memory_mb=512)
    assert result.passed, result.detail


def test_only_the_working_folder_is_writable(each_sandbox) -> None:
    """Not /dev or /dev/shm either (a tmpfs there would let a program fill this machine's memory)."""
    places = [
        "/",
        "/dev",
        "/dev/shm",
        "/tmp",
        "/proc",
        sandboxes.INSIDE,
        "/usr",
        sys.prefix,
        f"{sandboxes.INSIDE}/work",
    ]
    attack = WRITABLE_PLACES.format(places=places)
    result = check_solution(RIGHT + attack, [*TESTS, f"assert writable == [{sandboxes.INSIDE + '/work'!r}]"])
    assert result.passed, result.detail


NORMAL_USER_CHECK = """
import json, shutil, sys, types
sys.path.insert(0, {repo!r})
import adept_cli
package = types.ModuleType("adept_cli.evaluation")  # its __init__ would import torch, not needed here
package.__path__ = [{repo!r} + "/adept_cli/evaluation"]
sys.modules["adept_cli.evaluation"] = package
from adept_cli.evaluation import execution, sandbox

results = {{}}
for kind, tool in (("bubblewrap", "bwrap"), ("unshare", "unshare")):
    if shutil.which(tool) is None:
        continue
    chosen = sandbox.Sandbox(kind, as_nobody=False)
    sandbox.detect_sandbox = lambda chosen=chosen: chosen
    attack = execution.check_solution({attack!r}, {tests!r})
    forged = execution.check_solution({forged!r}, {tests!r}[:2])
    results[kind] = [sandbox.probe(chosen), attack.status, attack.detail, forged.status]
print(json.dumps(results))
"""


def test_as_a_normal_user_each_sandbox_isolates_too() -> None:
    """Most users are not root: adept run by `nobody` (with the system's Python, which nobody can run)
    must find the sandbox, hold no capabilities in it, write only its work folder and fail a forgery."""
    if os.geteuid() != 0:
        missing("root", "already a normal user: every other test here runs the normal user's sandbox")
    python = shutil.which("python3", path="/usr/bin:/bin")
    drop = [shutil.which("setpriv") or "setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]
    repo = str(Path(__file__).resolve().parents[1])
    target = Path(f"/tmp/adept-normal-user-escape-{time.time_ns()}")
    attack = f"""
import os
os.system("mount -o remount,rw,bind / 2>/dev/null; unshare -Urm sh -c 'mount -o remount,rw,bind /tmp' 2>/dev/null; "
          "touch {target} 2>/dev/null")
"""
    attack += WRITABLE_PLACES.format(places=["/", "/dev", "/dev/shm", "/tmp", "/sandbox", "/usr", "/sandbox/work"])
    attack += CAPABILITIES
    tests = [*TESTS, "assert writable == ['/sandbox/work']", "assert capabilities == 0"]
    forged = ANYTHING + "def add(a, b):\n    return Anything()\n"
    script = NORMAL_USER_CHECK.format(repo=repo, attack=RIGHT + attack, tests=tests, forged=forged)
    if python is None or shutil.which("setpriv") is None:
        missing("root", "needs a system python3 and setpriv to play a normal user")
    check = "import sys; assert sys.version_info >= (3, 10); sys.path.insert(0, sys.argv[1]); import adept_cli"
    usable = subprocess.run([*drop, python, "-c", check, repo], capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin"}, check=False)  # fmt: skip
    if usable.returncode != 0:
        missing("root", f"nobody cannot import adept from {repo} with {python}: {usable.stderr.strip()[-200:]}")
    try:
        done = subprocess.run([*drop, python, "-c", script], capture_output=True, text=True, timeout=120,
                              env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"}, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        results = json.loads(done.stdout.strip().splitlines()[-1])
        assert results, "neither bubblewrap nor unshare is installed"
        for kind, (probe, attack, detail, forgery) in results.items():
            assert probe, f"{kind} does not isolate for a normal user"
            assert attack == "passed", f"{kind}: {detail}"
            assert forgery == "failed", kind
        assert not target.exists()
    finally:
        target.unlink(missing_ok=True)


ROOT_WITHOUT_SYS_ADMIN_CHECK = """
import json, sys, types
sys.path.insert(0, {repo!r})
import adept_cli
package = types.ModuleType("adept_cli.evaluation")  # its __init__ would import torch, not needed here
package.__path__ = [{repo!r} + "/adept_cli/evaluation"]
sys.modules["adept_cli.evaluation"] = package
from adept_cli.evaluation import execution, sandbox

chosen = sandbox.detect_sandbox()
attack = execution.check_solution({attack!r}, {tests!r})
print(json.dumps([None if chosen is None else [chosen.kind, chosen.as_nobody, chosen.nobody_first],
                  attack.status, attack.detail]))
"""


def test_root_without_cap_sys_admin_runs_the_sandbox_as_nobody() -> None:
    """A default container: root, but no CAP_SYS_ADMIN to make namespaces (the capability dropped here with
    setpriv). adept becomes nobody first and makes them as a user does; the program is nobody on the
    machine, holds no capabilities, is alone in its PID namespace (bubblewrap's reaper, nobody too and
    without the filter, was once within reach of ptrace) and every escape of ESCAPES fails."""
    if os.geteuid() != 0:
        missing("root", "needs root (to play root without CAP_SYS_ADMIN)")
    python = shutil.which("python3", path="/usr/bin:/bin")  # one that nobody can run, as the sandbox needs
    if python is None or shutil.which("setpriv") is None:
        missing("root", "needs a system python3 and setpriv")
    repo = str(Path(__file__).resolve().parents[1])
    attack = (
        CAPABILITIES
        + """
import ctypes, os
nested = ctypes.CDLL(None, use_errno=True).unshare(0x10000000 | 0x00020000)
uid_map = open("/proc/self/uid_map").read().split()
outside = int(uid_map[1]) + os.geteuid() - int(uid_map[0])
"""
    )
    tests = [*TESTS, "assert capabilities == 0", "assert nested == -1", f"assert outside == {sandboxes.NOBODY}"]
    tests += ESCAPE_CHECKS  # once: ptrace bubblewrap's PID 1, make it unshare, mount a 4 GB tmpfs
    script = ROOT_WITHOUT_SYS_ADMIN_CHECK.format(repo=repo, attack=RIGHT + attack + ESCAPES, tests=tests)
    without = [shutil.which("setpriv"), "--bounding-set=-sys_admin", "--inh-caps=-sys_admin"]
    done = subprocess.run([*without, python, "-c", script], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"}, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    chosen, status, detail = json.loads(done.stdout.strip().splitlines()[-1])
    assert chosen is not None and chosen[1:] == [True, True], chosen
    assert status == "passed", detail


@pytest.mark.slow
def test_memory_is_bounded_for_the_program_as_a_whole() -> None:
    """Four processes of 400 MB each stay under the 1 GiB bound of each process, not under 1 GiB in all:
    where a cgroup can be made, the program as a whole is held to memory_mb (seen without it: 4 x 900 MB)."""
    from adept_cli.evaluation import memory_group

    if not memory_group.available():
        missing("cgroup", "no cgroup can be made here: the memory bound is per process (docs/tasks.md)")
    # Each child holds its block until every child has one (or is gone): they hold them all at once.
    hog = """
import os
ready, have_block = os.pipe()
hold, release = os.pipe()
children = []
for _ in range(4):
    pid = os.fork()
    if pid == 0:
        os.close(ready)
        os.close(release)
        block = b"x" * (400 * 2**20)
        os.write(have_block, b"1")
        os.close(have_block)
        os.read(hold, 1)  # until the parent lets go
        os._exit(0)
    children.append(pid)
os.close(have_block)
os.close(hold)
while os.read(ready, 1):  # until every child has written (or died): then no writer is left
    pass
os.close(release)
codes = sorted(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children)
"""
    alone = check_solution(RIGHT + hog.replace("range(4)", "range(1)"), [*TESTS, "assert codes == [0]"], memory_mb=1024)
    assert alone.passed, alone.detail  # one such process fits
    together = check_solution(RIGHT + hog, [*TESTS, "assert codes == [0, 0, 0, 0]"], memory_mb=1024)
    assert together.status == "failed", together


def test_the_filters_system_call_numbers_are_the_kernels() -> None:
    """A wrong number in the table would leave a call open: each is checked against the kernel's headers
    where they are installed (x86_64's asm/unistd_64.h, the generic table aarch64 uses)."""
    import re

    from adept_cli.evaluation import seccomp

    headers = {
        0: (Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h"), "__NR_{}"),
        1: (Path("/usr/include/asm-generic/unistd.h"), "__NR(?:3264)?_{}"),
    }
    checked = 0
    for column, (header, pattern) in headers.items():
        if not header.is_file():
            continue
        text = header.read_text()
        for name, numbers in {**seccomp._NUMBERS, **seccomp._RULED}.items():
            found = re.search(rf"#define {pattern.format(name)}\s+(\d+)\b", text)
            assert found and int(found.group(1)) == numbers[column], (header, name)
            checked += 1
    if not checked:
        missing("kernel-headers", "no kernel headers here (linux-libc-dev) to check the numbers against")
    for machine in ("x86_64", "aarch64"):
        assert len(seccomp.filter_program(machine)) % 8 == 0
