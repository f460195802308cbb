"""What runs below each local runner, recorded at each poll (`lineages`) and kept in its run's folder
(LINEAGE_FILE, `keep_lineage`): the runner is the child subreaper of its run's orphans, so while it
runs every process its run started is below it, whatever its session or environment, and once it
is killed outright this record is what still finds them (`leftovers.Leftovers.end`).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from autoresearch.files import process_start, read_json, write_json_atomic
from autoresearch.fleet import procs
from autoresearch.fleet.runner_pid import kernel_view

LINEAGE_FILE = "runner_lineage.json"  # in a run's folder: its runner's descendants at the last poll

Lineage = procs.StartTimes  # a runner's descendants (`lineages`), by pid, with their start times


def lineages(runners: Lineage) -> dict[int, Lineage]:
    """Each of `runners`' descendants now: none for one no longer the process that started at its
    start time (`runner_start`; a re-attached runner's pid, not its controller's child, may be
    another process's since). A runner, train.py's orphans' subreaper, has below it all its run
    started, in whatever session or environment; once the runner is killed outright they are
    init's, and only this record of them still finds them. Read down from each runner by the
    kernel's lists of children, each poll reading what is below the runners, not every process
    of the machine (1,140 of them cost 80 ms a poll: docs/BENCHMARKS.md); by one read of all
    /proc where the kernel keeps no such list (`procs.children_listed`)."""
    if not procs.children_listed():
        processes = procs.own_live_processes()
        return {runner: procs.below({runner: started}, processes) for runner, started in runners.items()}
    return {runner: procs.below_by_children(runner, started) for runner, started in runners.items()}


def with_unread(last: Lineage, read: Lineage) -> Lineage:
    """A live runner's lineage: what this poll `read`, with each process of the `last` poll's it
    lacks that is still the one seen there (its pid and start time). The kernel's lists of children
    are not reliable unless the children are stopped: one may be passed over (a sibling ending as
    they are read, its parent ending between reads), and a process passed over once was forgotten,
    and missed for good if its runner was killed outright before the next poll. One below a live
    runner stays below it (its run's orphans' subreaper): it is kept until it ends."""
    unread = {
        pid: s for pid, s in last.items() if pid not in read and procs.state_if_same(pid, s) is not None
    }
    return {**read, **unread}


def keep_lineage(exp_dir: Path, runner: int, started: str, lineage: Lineage) -> bool:
    """Write `runner`'s `lineage` (`lineages`) to its run's LINEAGE_FILE, with the kernel view it was
    seen from (`kernel_view`: a start time counts from the boot, a pid is of its namespace; its boot
    alone too, for older readers): a runner that ends while no controller watches it (its
    controller killed or stopped) leaves them to the next controller's `kept_lineage`. Whether it
    was written: one the disk refused is written again at the next poll, not only once the lineage
    changes (a run's processes may not change again)."""
    record = {
        **written_from_here(),
        "runner": [runner, started],
        "below": [[pid, s] for pid, s in lineage.items()],
    }
    try:
        write_json_atomic(exp_dir / LINEAGE_FILE, record)
    except OSError:  # (a disk that refuses it: tried again at the next poll)
        return False
    return True


def forget_lineage(exp_dir: Path) -> None:
    """Remove the run's LINEAGE_FILE once what its run left running was swept: of use to no one
    after (a process the sweep could not see is kept in leftovers' UNSEEN_FILE); one that cannot
    be removed is left, as harmless."""
    with contextlib.suppress(OSError):
        (exp_dir / LINEAGE_FILE).unlink(missing_ok=True)


def kept_lineage(exp_dir: Path, runner: int) -> tuple[str, Lineage]:
    """The start time and lineage of `runner` that its run's LINEAGE_FILE holds, where written from
    this kernel view (`written_here`); ("", {}) where there is none, or it cannot be read."""
    record = read_json(exp_dir / LINEAGE_FILE)
    if not record or not written_here(record):
        return "", {}
    with contextlib.suppress(KeyError, TypeError, ValueError):
        pid, started = record["runner"]
        if int(pid) == runner:
            return str(started), {int(child): str(born) for child, born in record.get("below", [])}
    return "", {}


def written_from_here() -> dict[str, str | None]:
    """Where a record of processes is written from, as `written_here` reads it: the kernel view, and
    the boot alone for an older version's reader."""
    return {"kernel": kernel_view(), "boot": procs.boot_id()}


def written_here(record: dict) -> bool:
    """Whether a `record` of processes (a LINEAGE_FILE's, leftovers' UNSEEN_FILE's) was written
    from this kernel view (`kernel_view`): its pids are of this pid namespace, their start times of
    this boot (another container's on this boot are not). One of an older version, which recorded
    its boot alone, is judged by its boot. One this process cannot read, or whose writer could
    not, is none: "" matched "" across boots."""
    here = kernel_view() if "kernel" in record else procs.boot_id()
    return bool(here) and record.get("kernel", record.get("boot")) == here


def runner_start(pid: int) -> str:
    """`pid`'s start time (`files.process_start`), "" where /proc does not show it: the runner's,
    which tells it from a later process given its pid (`lineages`)."""
    return process_start(pid) or ""
