"""The documentation against the code, where a mechanical check pays for itself: every module has
its row in docs/ARCHITECTURE.md, every agent module its line in docs/AGENT.md, and the top-level
--help names every option of the two tools it introduces."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "autoresearch"


def _module_table() -> str:
    """ARCHITECTURE.md's "Where things live": the table that names each module and its one idea."""
    text = (REPO / "docs" / "ARCHITECTURE.md").read_text()
    return text.split("## Where things live", 1)[1].split("\n## ", 1)[0]


def test_every_module_has_a_row_in_the_architecture_table() -> None:
    rows = _module_table()
    named = {
        name for cell in re.findall(r"^\| ([^|]+) \|", rows, re.M) for name in re.findall(r"`([^`]+)`", cell)
    }
    modules = {p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"}
    packages = {f"{p.parent.name}/" for p in PACKAGE.glob("*/__init__.py")}
    assert sorted((modules | packages) - named) == []
    assert sorted(named - modules - packages) == []  # and no row for a module that is gone


def test_every_agent_module_is_listed_in_the_agent_doc() -> None:
    text = (REPO / "docs" / "AGENT.md").read_text()
    tree = text.split("autoresearch/agent/", 1)[1].split("```", 1)[0]
    listed = set(re.findall(r"^\s+(\w+\.py)\s", tree, re.M))
    modules = {p.name for p in (PACKAGE / "agent").glob("*.py") if p.name != "__init__.py"}
    assert sorted(modules ^ listed) == []


def _help(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "autoresearch", *args, "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("tool", ["status", "report"])
def test_top_level_help_names_every_option_of_each_tool(tool: str) -> None:
    """The top-level --help's line for a tool is where a user learns what it takes."""
    options = set(re.findall(r"^\s+(--[a-z][a-z-]*)", _help(tool), re.M)) - {"--help"}
    assert options, "the tool's --help lists no option"
    line = next(line for line in _help().splitlines() if line.strip().startswith(f"autoresearch {tool} "))
    assert sorted(o for o in options if o not in line) == [], line
