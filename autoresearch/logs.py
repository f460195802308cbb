"""Logging for the controller: concise lines on the terminal, the full record in controller.log.

Rich lays lines out for a terminal. Where the output is not one (a pipe, `nohup`, a Slurm job's
output file) it would still wrap them at 80 columns, so an error said in one line would be cut into
several: there the lines are written plain, one record a line.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import sys
from collections.abc import Iterator
from pathlib import Path

from rich.logging import RichHandler

from autoresearch.outage import WAITS_LOGGER


class _Held(logging.handlers.BufferingHandler):
    """The records of a start not yet known to be accepted (`setup_logging`): a refused
    one leaves no log file, and the first lines of an accepted one are not lost (`log_to_file`).
    (A few at most: the first `capacity` are kept.)"""

    def __init__(self) -> None:
        super().__init__(capacity=1000)

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.buffer) < self.capacity:
            self.buffer.append(record)


def log_to_file(log_file: Path) -> None:
    """Write the log to `log_file` from now on, beginning with the records held until now."""
    root = logging.getLogger("autoresearch")
    file_handler = logging.FileHandler(log_file)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    for held in [h for h in root.handlers if isinstance(h, _Held)]:
        for record in held.buffer:
            file_handler.handle(record)
        root.removeHandler(held)
    root.addHandler(file_handler)


def held_warnings() -> list[str]:
    """The warnings held so far for controller.log: a dry run, which writes no log, shows them in
    its plan. A wait for the database is not one: the dry run said it as it came (`waits_said`)."""
    root = logging.getLogger("autoresearch")
    held = [r for h in root.handlers if isinstance(h, _Held) for r in h.buffer]
    return [r.getMessage() for r in held if r.levelno >= logging.WARNING and r.name != WAITS_LOGGER]


@contextlib.contextmanager
def waits_said() -> Iterator[None]:
    """The lines `outage.Patience` logs while a database fails (one as the wait begins, one when
    it is back) shown on stderr, in the context: a reader (`status`, `report`, the dry run) would
    otherwise hang without a word, and its stdout may be `--json`'s or the plan's."""
    said = logging.StreamHandler(sys.stderr)
    said.setFormatter(logging.Formatter("%(message)s"))
    said.setLevel(logging.WARNING)
    logger = logging.getLogger(WAITS_LOGGER)
    logger.addHandler(said)
    try:
        yield
    finally:
        logger.removeHandler(said)


def setup_logging(terminal: bool = True) -> None:
    """The terminal now (unless `terminal` is False: a dry run prints its plan instead); the log
    file once the start is accepted (`log_to_file`), the records until then held for it. Set up
    before the start's first check, so that a check's warning reaches controller.log."""
    root = logging.getLogger("autoresearch")
    root.setLevel(logging.INFO)
    root.handlers.clear()
    root.propagate = False
    root.addHandler(_Held())
    if terminal:
        root.addHandler(_console())


def _console() -> logging.Handler:
    """Rich lines on a terminal; plain ones, a record a line, anywhere else."""
    console: logging.Handler
    if sys.stdout.isatty():
        console = RichHandler(
            show_path=False, rich_tracebacks=False, markup=False, log_time_format="%H:%M:%S"
        )
        console.setFormatter(logging.Formatter("%(message)s"))
    else:
        console = logging.StreamHandler(sys.stdout)
        console.setFormatter(logging.Formatter("%(asctime)s %(levelname)-8s %(message)s", "%H:%M:%S"))
    return console
