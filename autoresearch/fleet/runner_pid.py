"""The judgement of a local run's runner.pid: which host and kernel view its runner ran under,
and whether it runs, seen in /proc here, or by the lock it holds (runner.lock) from another pid
namespace of this kernel. A resume (`other_fleet`), `status` and the local fleet's re-attach read
it; the fleet writes it (`fleet.local.LocalFleet.submit`)."""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path
from typing import NamedTuple

from autoresearch.files import alive_here, read_json
from autoresearch.fleet import procs
from autoresearch.runner import LOCK_FILE, PID_FILE, STARTED_FILE

# The last word of a runner.pid whose runner holds its LOCK_FILE (`left_its_lock`); LOCK_REFUSED
# where the fleet could not take it (its disk refused the file), so the runner holds none; one with
# neither was written by an older version, whose runner held none.
LOCKED = "flock"
LOCK_REFUSED = "nolock"


class PidFile(NamedTuple):
    """What runner.pid says: the runner's pid, slot and host, and the kernel view (`kernel_view`)
    of the controller that started it; None for what it does not say. `locked`: its runner holds
    its LOCK_FILE; `lock_refused`: its fleet could not take it (LOCK_REFUSED)."""

    pid: int | None
    slot: int | None
    host: str | None
    kernel: str | None
    locked: bool = False
    lock_refused: bool = False


def read_pid_file(path: Path) -> PidFile:
    """runner.pid ('PID SLOT HOST KERNEL_VIEW flock', 'flock' (LOCKED) where its runner holds its
    lock, 'nolock' (LOCK_REFUSED) where its fleet could not take it, neither before runners held
    one; 'PID SLOT HOST' before kernel views were recorded, 'PID SLOT' before hosts were, 'PID'
    alone before slots were; 'PID SLOT  KERNEL_VIEW' from a host with no name); Nones where it is
    absent or unreadable. Older readers read the first four words alone."""
    try:
        fields = path.read_text().split()
        numbers = [int(f) for f in fields[:2]]
    except (OSError, ValueError):
        return PidFile(None, None, None, None)
    pid, slot = (numbers + [None, None])[:2]
    named: list[str | None] = list(fields[2:5])
    if named and "/" in str(named[0]):  # a host with no name ('PID SLOT  KERNEL_VIEW'): no name has "/"
        named.insert(0, None)
    host, kernel, mark = (named + [None, None, None])[:3]
    marked = kernel is not None
    return PidFile(pid, slot, host, kernel, marked and mark == LOCKED, marked and mark == LOCK_REFUSED)


def kernel_view() -> str | None:
    """This process's boot of its kernel and its pid namespace, 'BOOT_ID/DEV:INODE': a runner.pid
    that names the same one names a pid /proc here shows, or shows gone, whatever the host's name
    now (a laptop's changes with its network, a container's when it is made again). The
    namespace's number is reused only once that namespace ended, with all its processes; None
    where /proc does not say."""
    boot = procs.boot_id()
    try:
        namespace = os.stat("/proc/self/ns/pid")
    except OSError:
        return None
    return f"{boot}/{namespace.st_dev}:{namespace.st_ino}" if boot else None


class RunnerRecord(NamedTuple):
    """A run's runner as runner.pid names it: `pid` None where there is none (ended: the runner
    removes it); `host` and `kernel` (`kernel_view`) None where it does not say; `locked` where
    its runner holds its LOCK_FILE (`left_its_lock`), `lock_refused` where its fleet could not
    take it (`why_no_lock`)."""

    pid: int | None
    host: str | None
    kernel: str | None
    locked: bool = False
    lock_refused: bool = False


def runner_record(exp_dir: Path) -> RunnerRecord:
    """The runner of `exp_dir`, read once from its runner.pid (one written before hosts were
    recorded: its started.json's node, where it began)."""
    pid, _, host, kernel, locked, lock_refused = read_pid_file(exp_dir / PID_FILE)
    if pid is None:
        return RunnerRecord(None, None, None)
    if host is None:
        node = (read_json(exp_dir / STARTED_FILE) or {}).get("node")
        host = str(node) if node else None
    return RunnerRecord(pid, host, kernel, locked, lock_refused)


def on_this_host(name: object) -> bool:
    """Whether the host `name` is this one: a run's node is Slurm's name for it where the runner
    ran in a Slurm job (`SLURMD_NODENAME`), often the short one of a host whose own is the full one."""
    return str(name).split(".")[0] == socket.gethostname().split(".")[0]


# The inode of the pid namespace a machine boots with (the kernel's PROC_PID_INIT_INO), the same on
# every machine: a container's is another.
INIT_PID_NAMESPACE = 0xEFFFFFFC


def seen_from_here(record: RunnerRecord) -> bool:
    """Whether /proc here shows whether `record`'s runner runs: its kernel view is this one
    (`kernel_view`), whatever the names say. One that names another is another machine's or
    container's, whose /proc this is not, though it has this one's name (containers called
    'localhost', or run with the host's network, its name); but for this machine itself after a
    reboot: the same name, both views of the machine's own pid namespace, no container's.
    Where either view is unknown (runner.pid written before they were), the host's name decides."""
    here = kernel_view()
    if record.kernel is None or here is None:
        return record.host is None or on_this_host(record.host)
    if record.kernel == here:
        return True
    rebooted = _machines_own(record.kernel) and _machines_own(here)
    return rebooted and record.host is not None and on_this_host(record.host)


def _machines_own(view: str) -> bool:
    """Whether the kernel view `view` ('BOOT_ID/DEV:INODE') is of a machine's own pid namespace,
    no container's (`INIT_PID_NAMESPACE`)."""
    return view.rpartition(":")[2] == str(INIT_PID_NAMESPACE)


def on_this_kernel(record: RunnerRecord) -> bool:
    """Whether `record` was written under this process's kernel view (`kernel_view`)."""
    return record.kernel is not None and record.kernel == kernel_view()


def left_its_lock(exp_dir: Path, record: RunnerRecord) -> bool:
    """Whether `record`'s runner, of another pid namespace on this boot of this kernel (another
    container, or this one restarted: its /proc is not this one), is known ended: it held its
    LOCK_FILE (`record.locked`), and this process can take it shared (`_lock_free`). Between
    processes of one kernel an flock is sound, and ends with its holder; on a network file system
    another kernel's need not be seen: another boot is not asked. A runner.pid of an older
    runner, which held none, is not judged so."""
    here = kernel_view()
    if not record.locked or record.kernel is None or here is None or record.kernel == here:
        return False
    if not _same_boot(record.kernel, here):  # (another boot: another kernel's lock)
        return False
    return _lock_free(exp_dir / LOCK_FILE)


def why_no_lock(record: RunnerRecord) -> str | None:
    """Why `record`'s runner held no lock where one would tell this host whether it ended
    (`left_its_lock`): its runner.pid names this boot of this kernel, or no kernel view at all
    (older still), so its runner may have been of this container before a restart, or one since
    removed, and ended with it; None where it held one, or no lock could tell (another boot).
    An older version's runner held none; a current one none where its disk refused the file."""
    here = kernel_view()
    if record.locked or here is None:
        return None
    if record.kernel is not None and not _same_boot(record.kernel, here):
        return None
    if record.lock_refused:
        return f"its runner.lock refused by its disk when it started ('{LOCK_REFUSED}' in runner.pid)"
    return f"started by an older version of autoresearch (no '{LOCKED}' in runner.pid)"


def _same_boot(view: str, other: str) -> bool:
    """Whether the kernel views `view` and `other` (`kernel_view`) are of one boot of one kernel."""
    return view.split("/")[0] == other.split("/")[0]


def _lock_free(path: Path) -> bool:
    """Whether no runner holds the lock (flock) on `path` now; False where the file is gone or
    cannot be opened or locked for another reason than its holder. Asked shared, as the runner
    holds it exclusive: two processes asking at once (a resume, a `status` beside it) do not
    take each other's look for a live runner."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def runner_elsewhere(exp_dir: Path, record: RunnerRecord) -> str | None:
    """The other host whose runner of `exp_dir` (`runner_record`) this host cannot watch; None
    where it is this host (`seen_from_here`: by kernel view, by name where none is recorded), or
    another pid namespace of this kernel whose runner is known ended (`left_its_lock`), or where
    the runner is seen live here: this host, whatever its name now (a laptop's changes with its
    network)."""
    if seen_from_here(record) or left_its_lock(exp_dir, record):
        return None
    if record.pid is not None and is_our_runner(record.pid, exp_dir):
        return None
    return record.host or "a host with no name"


def runner_alive(exp_dir: Path) -> bool | None:
    """Whether the runner its runner.pid names still runs `exp_dir` on this host; None where no
    runner.pid names one (not started here, or ended: the runner removes it), or where this host
    cannot tell: the runner runs on another host (`runner_elsewhere`), or the kernel has the pid
    but /proc does not show its process (mounted hidepid, another user's process), so it may be
    the runner or a process that reused its pid. A runner of another pid namespace of this kernel
    that left its lock (`left_its_lock`) is ended, whatever /proc here shows of its pid."""
    record = runner_record(exp_dir)
    if record.pid is None:
        return None
    if not seen_from_here(record) and left_its_lock(exp_dir, record):
        return False
    if runner_elsewhere(exp_dir, record) is not None:
        return None
    return _runner_seen(record.pid, exp_dir) if alive_here(record.pid) else False


def is_our_runner(pid: int, exp_dir: Path) -> bool:
    """True if `pid` is alive and is the runner of `exp_dir` (pids get reused)."""
    return _runner_seen(pid, exp_dir) is True


def _runner_seen(pid: int, exp_dir: Path) -> bool | None:
    """Whether /proc shows `pid` as the live runner of `exp_dir`; None where it shows no such
    process (ended, or hidden from this user)."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    zombie = stat.rsplit(")", 1)[-1].split()[0] == "Z"
    return not zombie and "autoresearch.runner" in args and str(exp_dir.resolve()) in args


def find_runner(exp_dir: Path) -> int | None:
    """The pid of a live runner of `exp_dir`, found by its command line; None if there is none."""
    for proc in Path("/proc").glob("[0-9]*"):
        if is_our_runner(int(proc.name), exp_dir):
            return int(proc.name)
    return None
