"""Run generated code against its tests in the sandbox (sandbox.py) and score it honestly.

Value tests: a test `assert <expression> == <expected>` never shows the program its expected value.
`<expected>` is a literal (2,919 of MBPP's 2,922 tests), or an expression that a clean program, without
any of the solution's code, computes first (MBPP's three `sys.getsizeof(...)`). The program computes
`<expression>` and writes the result as plain data (numbers, strings, bytes, lists, tuples, dicts, sets);
adept rebuilds it outside the program, with none of the program's code, and compares it with the
expected value itself. An object whose `__eq__` always says True, a patched `math.isclose` or
`AssertionError`, output that says "passed", an early `exit(0)`: none of them can produce a value the
program did not compute, so each is a failure.

Every other test is judged the same way, from values: the tests are not in the program file (they
reach the harness on stdin, which it reads and closes before the generated code runs), and after the
generated code the harness runs each test and writes its operands as plain data, which adept compares
itself: `assert A <op> B` (==, !=, <, <=, >, >=, in, not in) reports A and B; any other `assert E`
reports E, which must be true (`assert not E`: false). Only a test that is not an assert (a bare call
such as `check(candidate)`) runs as a statement, passing when it runs without error. The run ends with a
mark carrying a random nonce the parent chose; a program that ends early, skips a test or reports a test
twice fails. Code that deliberately digs the nonce out of the harness's own objects could forge records
for the tests whose expected value it can guess (never a value test's literal, which it never sees); the
sandbox contains it like any other program.
"""

from __future__ import annotations

import ast
import json
import operator
import os
import secrets
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

from .sandbox import ExecutionError, Sandbox, detect_sandbox, read_tail, run_program, sandbox_for, scratch_folder

__all__ = [
    "ExecutionError",
    "ExecutionResult",
    "Sandbox",
    "check_solution",
    "check_solutions",
    "detect_sandbox",
    "sandbox_for",
]

DEFAULT_TIMEOUT = 10.0
DEFAULT_MEMORY_MB = 1024
MAX_FILE_MB = 16  # any file the program writes, its captured stdout / stderr included
MAX_OPEN_FILES = 64
MAX_PROCESSES = 64
# Values rebuilt from a program's records are bounded, so that rebuilding and comparing them stays cheap:
# an int of at most 2^20 bits (comparing is linear), a fraction's parts of at most 2^16 bits (building one
# takes a gcd, quadratic in the size: 8-Mbit parts took a minute).
MAX_INT_BITS = 1 << 20
MAX_FRACTION_BITS = 1 << 16
JUDGE_SECONDS = 5.0  # rebuilding one program's values (see _Budget)


@dataclass(frozen=True)
class ExecutionResult:
    status: Literal["passed", "failed", "timeout"]
    detail: str = ""  # the first failed test, or the last line of stderr
    # Every test was of a kind a forgery can pass (no value test: see the module docstring)
    forgeable: bool = False

    @property
    def passed(self) -> bool:
        return self.status == "passed"


COMPARISONS: dict[type, tuple[str, Any]] = {
    ast.Eq: ("==", operator.eq),
    ast.NotEq: ("!=", operator.ne),
    ast.Lt: ("<", operator.lt),
    ast.LtE: ("<=", operator.le),
    ast.Gt: (">", operator.gt),
    ast.GtE: (">=", operator.ge),
    ast.In: ("in", lambda left, right: left in right),
    ast.NotIn: ("not in", lambda left, right: left not in right),
}


@dataclass(frozen=True)
class _Check:
    """A test the program runs and reports as values, judged here: `compare` (two operands and an
    operator from COMPARISONS), `truth` (one operand that must be true, or false when `negated`), or
    `statement` (not an assert: it passes when it runs)."""

    source: str
    kind: Literal["compare", "truth", "statement"]
    parts: tuple[str, ...]
    operator: str = ""
    negated: bool = False


def _check(test: str) -> _Check:
    try:
        tree = ast.parse(test)
    except SyntaxError:
        return _Check(test, "statement", (test,))  # fails inside the program, with Python's own message
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Assert):
        return _Check(test, "statement", (test,))
    condition = tree.body[0].test
    if isinstance(condition, ast.Compare) and len(condition.ops) == 1 and type(condition.ops[0]) in COMPARISONS:
        sign = COMPARISONS[type(condition.ops[0])][0]
        return _Check(test, "compare", (ast.unparse(condition.left), ast.unparse(condition.comparators[0])), sign)
    if isinstance(condition, ast.UnaryOp) and isinstance(condition.op, ast.Not):
        return _Check(test, "truth", (ast.unparse(condition.operand),), negated=True)
    return _Check(test, "truth", (ast.unparse(condition),))


@dataclass(frozen=True)
class _ValueTest:
    source: str  # the test as written
    expression: str  # what the program computes
    expected: Any = None  # never shown to the program
    reference: str | None = None  # an expression a clean program computes `expected` from (not a literal)


def _split(test: str) -> _ValueTest | str:
    """A value test when `test` is `assert <expression> == <other>`: with a literal on either side, or an
    expression on the right to be computed without the solution; else the statement."""
    try:
        tree = ast.parse(test)
    except SyntaxError:
        return test  # fails inside the program, with Python's own message
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Assert):
        return test
    comparison = tree.body[0].test
    if not (isinstance(comparison, ast.Compare) and len(comparison.ops) == 1 and isinstance(comparison.ops[0], ast.Eq)):
        return test
    left, right = comparison.left, comparison.comparators[0]
    for expression, literal in ((left, right), (right, left)):
        try:
            return _ValueTest(test, ast.unparse(expression), ast.literal_eval(literal))
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            continue
    return _ValueTest(test, ast.unparse(left), reference=ast.unparse(right))


def _modules_named(expression: str) -> list[str]:
    """The standard-library modules an expression names (`sys` in `sys.getsizeof(x)`), to import first."""
    names = {node.id for node in ast.walk(ast.parse(expression, mode="eval")) if isinstance(node, ast.Name)}
    return sorted(names & sys.stdlib_module_names)


# The harness's first lines: limits, then the nonce and the tests from stdin (closed before any generated
# code runs), and two functions: `report` writes a result as plain data; `tests`, called after the
# generated code, runs every test, reports its operands and ends with the mark.
_PROLOGUE = """\
def _adept_harness():
    import json, numbers, os, resource, sys
    from decimal import Decimal
    for limit, value in {limits!r}:
        resource.setrlimit(getattr(resource, limit), (value, value))
    nonce = sys.stdin.readline().strip()
    plan = json.loads(sys.stdin.readline())
    os.close(0)
    sys.stdin = None
    write = os.write

    def plain(value):
        if value is None:
            return None
        if isinstance(value, bool):
            return ["bool", bool(value)]
        if isinstance(value, int):
            return ["int", hex(int.__int__(value))]
        if isinstance(value, numbers.Integral):
            return ["int", hex(value.__index__())]
        if isinstance(value, float):
            return ["float", float.hex(value)]
        if isinstance(value, numbers.Rational):
            return ["fraction", hex(int(value.numerator)), hex(int(value.denominator))]
        if isinstance(value, numbers.Real):
            return ["float", float(value).hex()]
        if isinstance(value, complex):
            return ["complex", value.real.hex(), value.imag.hex()]
        if isinstance(value, Decimal):
            return ["decimal", str(value)]
        if isinstance(value, str):
            return ["str", str.__str__(value)]
        if isinstance(value, (bytes, bytearray)):
            return ["bytes", bytes(value).hex()]
        for kind in (list, tuple, set, frozenset):
            if isinstance(value, kind):
                return [kind.__name__, [plain(item) for item in kind.__iter__(value)]]
        if isinstance(value, dict):
            return ["dict", [[plain(key), plain(item)] for key, item in dict.items(value)]]
        return ["unsupported", type(value).__qualname__]

    def report(index, value):
        try:
            record = json.dumps(plain(value))
        except RecursionError:
            record = json.dumps(["unsupported", "a structure nested too deeply"])
        write(1, ("\\n%s %d %s\\n" % (nonce, index, record)).encode())

    def tests(scope):
        for index, statement, parts in plan:
            where = "<test %d>" % (index + 1)
            if statement:
                exec(compile(parts[0], where, "exec"), scope)
                report(index, [])
            else:
                report(index, [eval(compile(part, where, "eval"), scope) for part in parts])
        write(1, ("\\n%s end\\n" % nonce).encode())

    return report, tests


_adept_report, _adept_tests = _adept_harness()
del _adept_harness
"""
_EPILOGUE = "\n_adept_tests(globals())\n"
_PLAIN = "None, bool, numbers, str, bytes, list, tuple, dict, set"


class _Unreadable(ValueError):
    """A value record that is not plain data."""


class _Budget:
    """The time rebuilding one program's records may take. Sets and dicts are built an element at a time
    against it: integers that all hash alike (multiples of 2**61 - 1) make each insertion scan all the
    others, so 80,000 of them once held the grader for over a minute, outside the program's own limit."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds

    def check(self) -> None:
        if time.monotonic() > self.deadline:
            raise _Unreadable(
                f"its values took over {self.seconds:g} s to rebuild (keys that all hash alike?); not compared"
            )


def _rebuild(node: Any, budget: _Budget | None = None) -> Any:
    """The value a record describes, built from builtins only (never the program's code), within `budget`."""
    budget = budget or _Budget(JUDGE_SECONDS)
    if node is None:
        return None
    if not (isinstance(node, list) and node and isinstance(node[0], str)):
        raise _Unreadable(f"not a tagged value: {str(node)[:40]}")
    tag, *fields = node
    try:
        if tag == "bool" and isinstance(fields[0], bool):
            return fields[0]
        if tag == "int":
            return _bounded_int(fields[0], MAX_INT_BITS)
        if tag == "float":
            return float.fromhex(fields[0])
        if tag == "fraction":
            return Fraction(_bounded_int(fields[0], MAX_FRACTION_BITS), _bounded_int(fields[1], MAX_FRACTION_BITS))
        if tag == "complex":
            return complex(float.fromhex(fields[0]), float.fromhex(fields[1]))
        if tag == "decimal":
            return Decimal(fields[0])
        if tag == "str" and isinstance(fields[0], str):
            return fields[0]
        if tag == "bytes":
            return bytes.fromhex(fields[0])
        if tag in ("list", "tuple"):
            return {"list": list, "tuple": tuple}[tag](_rebuild(item, budget) for item in fields[0])
        if tag in ("set", "frozenset"):
            built = set()
            for item in fields[0]:
                built.add(_rebuild(item, budget))
                budget.check()
            return built if tag == "set" else frozenset(built)
        if tag == "dict":
            mapping = {}
            for key, value in fields[0]:
                mapping[_rebuild(key, budget)] = _rebuild(value, budget)
                budget.check()
            return mapping
    except _Unreadable:
        raise
    except (ValueError, TypeError, IndexError, ArithmeticError) as error:
        raise _Unreadable(f"{tag}: {error}") from None
    if tag == "unsupported":
        raise _Unreadable(
            f"returned a value of type {str(fields[0])[:60]}, which is compared only as plain data ({_PLAIN})"
        )
    raise _Unreadable(f"unknown tag {tag[:20]!r}")


def _bounded_int(text: Any, bits: int) -> int:
    """An int from its record (hex), refused beyond `bits` before it is built."""
    if not isinstance(text, str):
        raise _Unreadable(f"not a number: {str(text)[:40]}")
    if len(text.lstrip("-").removeprefix("0x")) > bits // 4 + 1:
        raise _Unreadable(f"an integer of more than {bits:,} bits, which is not compared")
    return int(text, 16)


def _shown(value: Any, limit: int = 200) -> str:
    """`repr(value)` cut to `limit` characters; a value Python will not print (an int over 4,300 digits)
    or whose repr fails is named by its type and size."""
    try:
        text = repr(value)
    except Exception:
        size = f" of {value.bit_length():,} bits" if isinstance(value, int) else ""
        return f"<{type(value).__name__}{size}>"
    return text if len(text) <= limit else text[:limit] + "..."


def _limits(timeout: float, memory_mb: int) -> list[tuple[str, int]]:
    return [
        ("RLIMIT_CPU", max(int(timeout) + 1, 1)),
        ("RLIMIT_AS", memory_mb * 1024 * 1024),
        ("RLIMIT_FSIZE", MAX_FILE_MB * 1024 * 1024),
        ("RLIMIT_NOFILE", MAX_OPEN_FILES),
        ("RLIMIT_NPROC", MAX_PROCESSES),
    ]


def _records(stdout: Path, nonce: str) -> tuple[dict[int, str], bool, int | None]:
    """The value records, whether the end mark came, and the first test reported twice (if any)."""
    records: dict[int, str] = {}
    ended, twice = False, None
    prefix = nonce + " "
    with open(stdout, "rb") as handle:  # at most MAX_FILE_MB: the program cannot write more
        for raw in handle:
            line = raw.decode("utf-8", "replace")
            if not line.startswith(prefix):
                continue
            index, _, record = line[len(prefix) :].rstrip("\n").partition(" ")
            if index == "end":
                ended = True
            elif index.isdigit() and int(index) not in records:
                records[int(index)] = record
            elif index.isdigit() and twice is None:
                twice = int(index)
    return records, ended, twice


def _verdict(tests: list[_ValueTest | _Check], records: dict[int, str]) -> ExecutionResult:
    budget = _Budget(JUDGE_SECONDS)
    for index, test in enumerate(tests):
        what = test.expression if isinstance(test, _ValueTest) else test.source
        if index not in records:
            return ExecutionResult("failed", f"test {index + 1} reported no value: {what}"[:300])
        try:
            values = _rebuild(json.loads(records[index]), budget)
            if not isinstance(values, list) or len(values) != _operand_count(test):
                raise _Unreadable("a record of the wrong shape")
            failure = _failure(test, values) if values else None  # a statement reports none: it ran
        except Exception as error:  # the record is the program's output: anything wrong in it is its failure
            reason = str(error) if isinstance(error, _Unreadable) else f"{type(error).__name__}: {error}"
            return ExecutionResult("failed", f"test {index + 1} ({what}): {reason}"[:300])
        if failure is not None:
            return ExecutionResult("failed", failure[:300])
    return ExecutionResult("passed")


def _operand_count(test: _ValueTest | _Check) -> int:
    if isinstance(test, _ValueTest):
        return 1
    return 0 if test.kind == "statement" else len(test.parts)


def _failure(test: _ValueTest | _Check, values: list) -> str | None:
    """Why the reported values fail `test`, or None when they pass."""
    if isinstance(test, _ValueTest):
        if values[0] == test.expected:
            return None
        return f"AssertionError: {test.expression} == {_shown(test.expected)} (got {_shown(values[0])})"
    if test.kind == "compare":
        compare = next(function for sign, function in COMPARISONS.values() if sign == test.operator)
        if compare(values[0], values[1]):
            return None
        return f"AssertionError: {test.source} (left {_shown(values[0])}, right {_shown(values[1])})"
    if test.kind == "truth" and bool(values[0]) != test.negated:
        return None
    return f"AssertionError: {test.source} (got {_shown(values[0])})"


def _run_harnessed(
    sandbox: Sandbox,
    scratch: Path,
    lines: list[str],
    timeout: float,
    memory_mb: int,
    tests: Sequence[_ValueTest | _Check] = (),
) -> tuple[int | None, str]:
    """`lines` between the harness's prologue and epilogue, with `tests` (sent on stdin, never written into
    the program) run after them, under a fresh nonce: (exit status, nonce)."""
    nonce = secrets.token_hex(16)
    plan = [
        [i, False, [test.expression]]
        if isinstance(test, _ValueTest)
        else [i, test.kind == "statement", list(test.parts)]
        for i, test in enumerate(tests)
    ]
    program = "\n".join([_PROLOGUE.format(limits=_limits(timeout, memory_mb)), *lines, _EPILOGUE])
    stdin = f"{nonce}\n{json.dumps(plan)}\n".encode()
    return run_program(sandbox, scratch, program, stdin, timeout, memory_mb), nonce


def _reference_values(
    sandbox: Sandbox, scratch: Path, tests: list[_ValueTest | str], timeout: float, memory_mb: int
) -> list[_ValueTest | str]:
    """`tests` with each reference expression computed by a clean program (none of the solution's code
    in it): a value test with that expected value, or, where the expression cannot be computed alone
    (it calls the solution), the statement as written."""
    pending = {i: test for i, test in enumerate(tests) if isinstance(test, _ValueTest) and test.reference}
    if not pending:
        return tests
    imports = sorted({module for test in pending.values() for module in _modules_named(test.reference)})
    lines = [f"import {module}" for module in imports]
    for i, test in pending.items():
        lines += ["try:", f"    _adept_report({i}, ({test.reference}))", "except Exception:", "    pass"]
    code, nonce = _run_harnessed(sandbox, scratch, lines, timeout, memory_mb)
    records = _records(scratch / ".stdout", nonce)[0] if code == 0 else {}
    resolved = list(tests)
    for i, test in pending.items():
        try:
            expected = _rebuild(json.loads(records[i]))
        except Exception:  # not computed alone, or not plain data: the test runs as written
            resolved[i] = test.source
        else:
            resolved[i] = _ValueTest(test.source, test.expression, expected)
    return resolved


def _run(
    sandbox: Sandbox, scratch: Path, body: str, tests: Sequence[str], timeout: float, memory_mb: int
) -> ExecutionResult:
    """`body` then `tests` as one program in `scratch`, scored as the module docstring says."""
    split = _reference_values(sandbox, scratch, [_split(test) for test in tests], timeout, memory_mb)
    judged = [_check(test) if isinstance(test, str) else test for test in split]
    # no value test among them: a program that digs the nonce out of the harness could pass them all
    forgeable = bool(judged) and not any(isinstance(test, _ValueTest) for test in judged)
    return replace(_judged(sandbox, scratch, body, judged, timeout, memory_mb), forgeable=forgeable)


def _judged(
    sandbox: Sandbox, scratch: Path, body: str, judged: list[_ValueTest | _Check], timeout: float, memory_mb: int
) -> ExecutionResult:
    code, nonce = _run_harnessed(sandbox, scratch, [body, ""], timeout, memory_mb, judged)
    if code is None:
        return ExecutionResult("timeout", f"no result within {timeout:g} s")
    if code != 0:
        lines = read_tail(scratch / ".stderr").strip().splitlines()
        return ExecutionResult("failed", lines[-1] if lines else f"exit status {code}")
    records, ended, twice = _records(scratch / ".stdout", nonce)
    if not ended:
        return ExecutionResult("failed", "the program ended before its tests finished")
    if twice is not None:
        return ExecutionResult("failed", f"test {twice + 1} was reported twice")
    return _verdict(judged, records)


def check_solution(
    code: str,
    tests: Sequence[str],
    setup: str = "",
    timeout: float = DEFAULT_TIMEOUT,
    memory_mb: int = DEFAULT_MEMORY_MB,
    allow_unsafe_exec: bool = False,
) -> ExecutionResult:
    """Run `code`, then `setup` (test fixtures: MBPP's build objects of the solution's classes), then each
    test; passed only if every test passed (see the module docstring)."""
    sandbox = sandbox_for(allow_unsafe_exec)
    with scratch_folder() as scratch:
        try:
            return _run(sandbox, scratch, "\n".join([code, setup]), tests, timeout, memory_mb)
        except (ValueError, TypeError, ArithmeticError, RecursionError, MemoryError) as error:
            # judging this program's output went wrong: that fails this program, never the evaluation
            return ExecutionResult("failed", f"its results could not be judged ({type(error).__name__}: {error})"[:300])


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
