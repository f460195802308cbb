"""The `autoresearch` console script: the same program as `python -m autoresearch`."""

from __future__ import annotations

import runpy


def main() -> None:
    """Run the package as `python -m` does: Hydra finds conf/ from the file of a `__main__`
    module, but from any other module it would look for an importable `conf` package instead."""
    runpy.run_module("autoresearch", run_name="__main__", alter_sys=True)
