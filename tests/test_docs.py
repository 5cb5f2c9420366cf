"""The README's two commands stay true: CI runs the test command exactly as written, and
the CLI has every command the README shows."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    readme = (REPO / "README.md").read_text()
    first_block = readme.split("```bash", 1)[1].split("```", 1)[0]
    return [
        line.strip()
        for line in first_block.splitlines()
        if line.strip() and not line.startswith("#")
    ]


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    run, test = _readme_commands()
    assert "jetledger up" in run
    assert "pytest" in test
    assert test in (REPO / ".ci" / "run").read_text()


def test_every_cli_command_in_the_readme_exists() -> None:
    readme = (REPO / "README.md").read_text()
    # commands as written in code: `jetledger x` or .venv/bin/jetledger x
    mentioned = set(re.findall(r"(?:`|bin/)jetledger ([a-z]+)", readme))
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    missing = {name for name in mentioned if name not in out}
    assert not missing, f"README mentions commands the CLI lacks: {missing}"
