"""The Makefile's demo target, run by make against a stand-in for the environment's python that
records what it was given and exits as the controller would: what make adds to the tool's own
closing lines, and what it passes on."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def make_demo(venv: Path, exit_code: int, *args: str) -> subprocess.CompletedProcess[str]:
    """`make demo` with `venv` as its environment, set up already: its python records its
    arguments and the make target it was told of, then exits with `exit_code`."""
    (venv / "bin").mkdir(parents=True, exist_ok=True)
    python = venv / "bin" / "python"
    python.write_text(
        f'#!/bin/sh\necho "$@" > {venv}/argv\necho "$AUTORESEARCH_MAKE_TARGET" > {venv}/target\n'
        f'echo "$AUTORESEARCH_MAKE_ARGS" > {venv}/args\n'
        f"exit {exit_code}\n"
    )
    python.chmod(0o755)
    (venv / ".installed").touch()  # newer than pyproject.toml: nothing to install
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(REPO), "demo", f"VENV={venv}", *args],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize("code", [3, 130])
def test_a_demo_stopped_by_ctrl_c_ends_without_makes_error_line(tmp_path: Path, code: int) -> None:
    """Ctrl-C stops the controller with exit 3 (130 for a second one), after its own line saying
    that the same command resumes: make added "*** [Makefile:NN: demo] Error 3", which read as a
    crash. A user's stop ends make quietly."""
    made = make_demo(tmp_path / "venv", code)
    assert made.returncode == 0, made.stderr
    assert "Error" not in made.stderr


def test_a_demo_that_fails_still_fails_under_make(tmp_path: Path) -> None:
    made = make_demo(tmp_path / "venv", 2)
    assert made.returncode != 0
    assert "Error 2" in made.stderr


def test_make_demo_passes_args_on_as_hydra_overrides(tmp_path: Path) -> None:
    """The closing hint after a budget says `make demo ARGS="campaign.budget.max_experiments=60"`:
    make passes ARGS to the campaign, and tells it it runs as make's demo target."""
    venv = tmp_path / "venv"
    made = make_demo(venv, 0, "ARGS=campaign.budget.max_experiments=60 campaign.wave_size=2")
    assert made.returncode == 0, made.stderr
    argv = (venv / "argv").read_text().split()
    assert argv == [
        "-m",
        "autoresearch",
        "+campaign=demo",
        "campaign.budget.max_experiments=60",
        "campaign.wave_size=2",
    ]
    assert (venv / "target").read_text().strip() == "demo"
    assert (venv / "args").read_text().strip() == "campaign.budget.max_experiments=60 campaign.wave_size=2"
