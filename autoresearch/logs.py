"""Logging for the controller: concise lines on the terminal, the full record in controller.log.

Rich lays lines out for a terminal. Where the output is not one (a pipe, `nohup`, a Slurm job's
output file) it would still wrap them at 80 columns, so an error said in one line would be cut into
several: there the lines are written plain, one record a line.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from rich.logging import RichHandler


def setup_logging(log_file: Path | None = None, level: int = logging.INFO) -> None:
    root = logging.getLogger("autoresearch")
    root.setLevel(level)
    root.handlers.clear()
    root.propagate = False
    console: logging.Handler
    if sys.stdout.isatty():
        console = RichHandler(
            show_path=False, rich_tracebacks=False, markup=False, log_time_format="%H:%M:%S"
        )
        console.setFormatter(logging.Formatter("%(message)s"))
    else:
        console = logging.StreamHandler(sys.stdout)
        console.setFormatter(logging.Formatter("%(asctime)s %(levelname)-8s %(message)s", "%H:%M:%S"))
    root.addHandler(console)
    if log_file is not None:
        file_handler = logging.FileHandler(log_file)
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        root.addHandler(file_handler)
