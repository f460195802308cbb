"""How long does the local fleet's look below its runners take at each poll on a busy machine?

Starts `--sleepers` sleeping processes of this user beside a stand-in runner with `--workers`
children (a train.py's data-loader workers), then times `lineage.lineages` for that runner,
best of 5 rounds of 20 looks: read down the kernel's lists of children (what a poll does where
the kernel keeps them), and by one read of every process's /proc/PID/stat (what it does where
it does not, and what every poll did before). Prints the processes on the machine and both.

    python scripts/bench_leftovers_scan.py --sleepers 1000 --workers 4
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import timeit
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project's package, installed or not

from autoresearch.fleet import lineage, procs  # noqa: E402


def best_ms(look: Callable[[], object]) -> float:
    """The best of 5 rounds of 20 calls of `look`, in milliseconds a call."""
    return min(timeit.repeat(look, number=20, repeat=5)) / 20 * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sleepers", type=int, default=1000, help="sleeping processes started beside the runner"
    )
    parser.add_argument("--workers", type=int, default=4, help="children of the stand-in runner")
    args = parser.parse_args()
    workers = f"import subprocess; ws = [subprocess.Popen(['sleep', '600']) for _ in range({args.workers})]; input()"
    runner = subprocess.Popen([sys.executable, "-c", workers], stdin=subprocess.PIPE, start_new_session=True)
    sleepers = [subprocess.Popen(["sleep", "600"]) for _ in range(args.sleepers)]
    try:
        runners = {runner.pid: lineage.runner_start(runner.pid)}
        while len(lineage.lineages(runners)[runner.pid]) < args.workers:  # (its workers starting)
            pass
        processes = sum(1 for name in os.listdir("/proc") if name.isdigit())
        by_children = best_ms(lambda: lineage.lineages(runners)) if procs.children_listed() else None
        procs.children_listed = lambda: False  # as on a kernel that keeps no lists of children
        every_process = best_ms(lambda: lineage.lineages(runners))
        children = "no lists on this kernel" if by_children is None else f"{by_children:.2f} ms"
        print(
            f"{processes} processes: by children's lists {children}, by every process {every_process:.1f} ms a poll"
        )
    finally:
        os.killpg(runner.pid, signal.SIGKILL)  # (its workers with it)
        for process in sleepers:
            process.kill()
        for process in [*sleepers, runner]:
            process.wait()


if __name__ == "__main__":
    main()
