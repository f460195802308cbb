"""The `autoresearch` console script: a campaign command, as `python -m autoresearch` runs it, or
`autoresearch status DIR` / `autoresearch report DIR` for a campaign folder."""

from __future__ import annotations

import importlib
import runpy
import sys

TOOLS = {"status": "autoresearch.status", "report": "autoresearch.report"}  # never a Hydra override


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in TOOLS:
        tool = sys.argv.pop(1)
        sys.argv[0] = f"autoresearch {tool}"  # what its --help and errors call it
        importlib.import_module(TOOLS[tool]).main()
        return
    # As `python -m` does: Hydra finds conf/ from the file of a `__main__` module, but from any
    # other module it would look for an importable `conf` package instead.
    runpy.run_module("autoresearch", run_name="__main__", alter_sys=True)
