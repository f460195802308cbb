"""The documentation against the code, where a mechanical check pays for itself: every module has
its row in docs/ARCHITECTURE.md, and every agent module its line in docs/AGENT.md."""

from __future__ import annotations

import re
from pathlib import Path

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
