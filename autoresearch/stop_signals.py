"""How the controller hears that it is asked to stop (Ctrl-C's INT, a TERM, Slurm's USR1 before
a job's time limit) and by whom, and how it tells
slurm/controller.sbatch that it can hear it: the script holds each stop that comes before then,
since an INT during start-up (imports, Hydra) would raise KeyboardInterrupt wherever it lands.
And how it stops hearing them once it has said its last word (`ignore_stops`)."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

READY_PID_ENV = "AUTORESEARCH_READY_PID"  # set by slurm/controller.sbatch to its own pid
StopHandler = Callable[[int, object], None]
STOP_SIGNALS = (signal.SIGINT, signal.SIGUSR1, signal.SIGTERM)


def install_stop_handlers(request_stop: StopHandler) -> None:
    """Each stop signal goes to `request_stop`; then the script that started us, if one did, is told."""
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGUSR1, request_stop)
    signal.signal(signal.SIGTERM, stop_handler_for_term(request_stop))
    tell_parent_ready()


def stopped_by(signum: int) -> str:
    """Who asked for a stop, as the campaign's end says it ("stopped by ..."): USR1 is what Slurm
    sends before a job's time limit (`--signal`, passed on by slurm/controller.sbatch)."""
    return "its Slurm job's time limit" if signum == signal.SIGUSR1 else "the user"


def stop_handler_for_term(request_stop: StopHandler) -> StopHandler:
    """TERM stops the controller as Ctrl-C does, unless it started with TERM ignored: then its
    parent (slurm/controller.sbatch) passes each stop on as INT, and a TERM is Slurm's copy of one
    sent to the whole job (`scancel`), which would count twice. Not left ignored, so that the
    processes the controller starts can still be ended with TERM."""
    if signal.getsignal(signal.SIGTERM) == signal.SIG_IGN:
        return lambda _signum, _frame: None
    return request_stop


def tell_parent_ready() -> None:
    """USR2 to slurm/controller.sbatch, which then passes on the stops it held. Only to the parent
    the variable names (one inherited by a process the controller did not start is ignored), and
    the variable is dropped, so that the controller's own children do not inherit it."""
    named = os.environ.pop(READY_PID_ENV, "")
    if named.isdigit() and int(named) == os.getppid():
        os.kill(int(named), signal.SIGUSR2)


def ignore_stops() -> None:
    """Ignore stop signals from here on: the controller has said its last word, and nothing is left
    to stop. Python's teardown (most of a second, with torch and matplotlib loaded) gives a signal
    that has a Python handler back its default action, and a Ctrl-C there killed the process
    without a word (exit -2); an ignored one stays ignored to the end."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
