"""Logging for the controller: concise lines on the terminal, the full record in controller.log."""

from __future__ import annotations

import logging
from pathlib import Path

from rich.logging import RichHandler


def setup_logging(log_file: Path | None = None, level: int = logging.INFO) -> None:
    root = logging.getLogger("autoresearch")
    root.setLevel(level)
    root.handlers.clear()
    root.propagate = False
    console = RichHandler(show_path=False, rich_tracebacks=False, markup=False, log_time_format="%H:%M:%S")
    console.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(console)
    if log_file is not None:
        file_handler = logging.FileHandler(log_file)
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        root.addHandler(file_handler)
