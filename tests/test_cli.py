"""The `adept` entry points and the promises the README makes about them."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from adept_cli.cli import app

from .helpers import REPO

runner = CliRunner()
SUBCOMMANDS = (
    "train",
    "eval",
    "predict",
    "chat",
    "serve",
    "sweep",
    "report",
    "budget",
    "tasks",
    "shift-probe",
    "offsets",
    "inspect",
    "recipes",
    "export",
)


def test_help_lists_every_subcommand() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in SUBCOMMANDS:
        assert re.search(rf"│ {re.escape(name)}\s", result.output), name


def test_python_dash_m_runs_the_same_app() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "adept_cli", "budget", "--dim", "768", "--prompt-len", "60"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "r = 19" in result.stdout


def test_readme_commands_are_the_ones_ci_runs() -> None:
    """CI runs the README's install (from the lock) and its test command, word for word."""
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, flags=re.S)
    setup, tests = blocks[0], blocks[1]
    activate = ". .venv/bin/activate && "
    install = setup.split(activate, 1)[1].split(" && adept ", 1)[0]
    assert "-c requirements.lock" in install and install in ci
    test_line = tests.split(activate, 1)[1]
    assert "-c requirements.lock" in test_line and "python -m pytest -q" in test_line and test_line in ci
    assert "--cov=adept_cli" in test_line and "not slow" not in test_line  # the whole suite, with its coverage
    quick = blocks[2].split(activate, 1)[1]
    assert quick == 'python -m pytest -q -m "not slow"'  # the quick loop, as DEVELOPERS.md gives it too
    assert quick in (REPO / "DEVELOPERS.md").read_text()
    assert "venv" in ci


def _adept(*args: str, **env: str) -> subprocess.CompletedProcess:
    """The real command in a fresh interpreter; prints whether torch was imported, after it returns."""
    code = (
        "import sys; from adept_cli.cli import app\n"
        "try:\n    app(sys.argv[1:])\nexcept SystemExit as exit:\n    code = exit.code\n"
        "print('torch imported:', 'torch' in sys.modules, file=sys.stderr); sys.exit(code)"
    )
    environment = {**__import__("os").environ, **env}
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=environment, check=False
    )


def _one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if not line.startswith("torch imported")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.mark.slow
def test_bad_settings_and_paths_answer_before_torch_loads(tmp_path) -> None:
    (tmp_path / "a-file").write_text("")
    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    for args, message in [
        (["train", "steps=0"], "steps must be >= 1"),
        (["train", "method=adept", "rank=4"], "rank applies to method dept, not adept"),
        (["train", "-o", "/proc/adept-run"], "--output-dir /proc/adept-run: /proc is not writable"),
        (["train", "-o", str(tmp_path / "a-file" / "run")], "a-file is a file, not a folder"),
        (["train", "--model", str(tmp_path / "missing")], f"model path {tmp_path / 'missing'} does not exist"),
        (["train", "--model", str(not_a_model), "-o", str(tmp_path / "r")], "config.json and tokenizer files"),
        (["train", "--task", "no-such-task", "-o", str(tmp_path / "r")], "no-such-task"),
    ]:
        result = _adept(*args)
        assert message in _one_line_error(result), args
        assert "torch imported: False" in result.stderr, args
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_unwritable_outputs_are_one_line(tmp_path) -> None:
    (tmp_path / "a-file").write_text("")
    for args, message in [
        (["export", "--run", str(tmp_path), "-o", "/proc/adept-export"], "/proc is not writable"),
        (["export", "--run", str(tmp_path), "-o", str(tmp_path / "a-file")], "is not empty (or not a folder)"),
        (["eval", "--task", "rte", "--predictions", "/proc/x/p.jsonl"], "/proc is not writable"),
        (["eval", "--task", "no-such-task"], "no-such-task"),
        (["eval", "--task", "rte", "--data-dir", str(tmp_path / "nowhere")], "is not a directory"),
        (["eval", "--run", str(tmp_path), "--limit", "0"], "--limit must be >= 1"),
        (["predict", "--run", str(tmp_path), "--input", "-", "--task", "no-such-task"], "no-such-task"),
    ]:
        result = _adept(*args)
        assert message in _one_line_error(result), args
        assert "torch imported: False" in result.stderr, args


@pytest.mark.slow
def test_an_unreachable_hub_is_one_quick_line_not_retries() -> None:
    # Port 9 on this machine refuses at once: the same answer an offline machine gives without DNS.
    result = _adept(
        "budget",
        "--model",
        "some-org/some-model",
        "--prompt-len",
        "10",
        HF_ENDPOINT="http://127.0.0.1:9",
        HF_HUB_OFFLINE="0",
    )
    line = _one_line_error(result)
    assert "cannot be reached (this machine seems offline)" in line and "HF_HUB_OFFLINE=1" in line
    assert "Retrying" not in result.stderr


def test_budget_reads_only_the_config_of_a_local_model(tmp_path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "llama", "hidden_size": 96}')
    (tmp_path / "tokenizer.json").write_text("{}")
    result = _adept("budget", "--model", str(tmp_path), "--prompt-len", "10", "--json")
    assert result.returncode == 0, result.stderr
    assert '"dim": 96' in result.stdout and "torch imported: False" in result.stderr


def test_json_is_a_flag_in_help() -> None:
    for command in ("train", "eval", "budget", "tasks", "recipes", "shift-probe", "offsets", "inspect", "export"):
        text = runner.invoke(app, [command, "--help"], terminal_width=200).output
        assert re.search(r"--json\s", text) and "--no-json" not in text, command


def test_gguf_loading_draws_no_progress_bar() -> None:
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    from adept_cli.hf import _quiet_gguf_loading

    original = gguf_utils.tqdm
    with _quiet_gguf_loading():
        items = [1, 2, 3]
        assert gguf_utils.tqdm(items, desc="Converting and de-quantizing GGUF tensors...") is items
    assert gguf_utils.tqdm is original


def _broken_lines(text: str) -> list[str]:
    """Lines a wrapper would never leave so short: the next line's first word (same text column) fits at
    the end of this one. Hard line breaks kept from a docstring show up this way."""
    prose = text.split(" Examples:")[0]  # the examples are commands, one per line
    lines = [line.rstrip() for line in prose.splitlines()]
    broken = []
    for line, following in zip(lines, lines[1:]):
        inner, after = (line[1:-1], following[1:-1]) if line.startswith("│") and following.startswith("│") else (
            line, following)  # fmt: skip
        column = len(after) - len(after.lstrip())
        words = after.split()
        if not words or column == 0 or words[0].startswith(("-", "*", "[", "$")) or len(inner) <= column:
            continue
        if inner[column - 1] != " " or inner[column] == " ":  # not the same text column
            continue
        if line.startswith("│") and column <= 1:  # a table's next row (names start at its left edge)
            continue
        if len(words) > 1 and words[1].startswith("<") and words[1].endswith(">"):  # an argument's row: NAME <type>
            continue
        width = len(inner) if line.startswith("│") else int(os.environ.get("COLUMNS", "80"))
        used = len(inner.rstrip())
        if used + 1 + len(words[0]) < width - 1:
            broken.append(f"{line.strip()!r} / {following.strip()!r}")
    return broken


@pytest.mark.parametrize("columns", ["80", "120"])
def test_help_is_wrapped_not_broken_mid_sentence(columns) -> None:
    """Every command's help at 80 and 120 columns: no description broken mid-sentence, no <bool> on flags."""
    # one process renders every help (as a terminal of that width would), each after a marker line
    script = (
        "import sys\nfrom adept_cli.cli import app\n"
        "names = [None] + [c.name for c in app.registered_commands if c.name != 'lm-eval']\n"
        "for name in names:\n"
        "    print('=== help of', name, flush=True)\n"
        "    try:\n        app([name, '--help'] if name else ['--help'])\n"
        "    except SystemExit as done:\n        assert not done.code, (name, done.code)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True, text=True, env={**os.environ, "COLUMNS": columns, "TERM": "dumb"}, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    helps = result.stdout.split("=== help of ")[1:]
    assert len(helps) == 1 + len([c for c in app.registered_commands if c.name != "lm-eval"])
    for text in helps:
        name, _, shown = text.partition("\n")
        assert "<bool>" not in shown and "Usage:" in shown, name
        assert max(map(len, shown.splitlines())) <= int(columns), name  # drawn at the terminal's width
        assert _broken_lines(shown) == [], (name, columns)
