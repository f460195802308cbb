"""What a local run left running once its runner is gone, found and killed before its slot is
given again.

The runner ends what train.py started when train.py ends (`runner._kill_group`: its process group,
then what left it, as the child subreaper of train.py's orphans). A runner killed outright (kill -9,
the kernel's OOM killer, the fleet's KILL at the deadline of a runner that ignored TERM) does none
of it: the kernel kills train.py with it (PDEATHSIG), but what train.py started (a data-loader
worker, a server, anything an agent's train.py spawns) lives on, reparented to init, and on a GPU
shares it with the next run of the slot. Only something that outlives the runner can end these,
so the local fleet does, as it finds a runner ended (at a poll, or as its controller stops) and
when a controller started again finds one gone: `Leftovers.end`.

A run's process is known by its environment, its runner's session, and its lineage. Its environment: each
inherits train.py's AUTORESEARCH_RESULT, the run's own result file, which /proc/PID/environ shows
as the process was started, and which a process that reuses the pid of an ended one does not
have; a process started with an environment of its own (env={}) drops it. Its session: train.py
has a process group of its own in its runner's session, which a process leaves only by setsid (a
daemon), whatever its environment; a runner's fleet names it (`Leftovers.end`'s `session`) only
where the runner, not reaped yet, holds its number from any later session. Its lineage: the
runner is the child subreaper of its run's orphans, so while it runs every process its run started
is below it, whatever its session or environment; the fleet records them at each poll
(`lineage.lineages`) and, the runner gone, kills each still the process recorded (its start time),
with all below it (`Leftovers.end`'s `lineage`): those reparented to init keep their own children.
The record is kept in the run's folder too (`lineage.keep_lineage`), for a controller started
again after the runner ended while none watched it (its controller killed or stopped). A process
is held before its environment or session is read, and signalled only if it is still the one
held, never one given its pid since (`procs.Held`). (A per-run cgroup needs a delegation most
machines do not give; a watchdog process outliving the runner can itself be killed outright.)
Reading a process's environment waits on its memory map's lock, which
a process stuck on a hung mount can hold for good: only this user's processes not in
uninterruptible sleep are read, each in a thread waited for READ_LIMIT_S, a read that hangs then
left to its thread and its process not read again until it returns (`_Environs`): a hung mount
costs one wait and one thread a process, not one a run. A process in uninterruptible sleep or
whose read hangs is looked at again at the fleet's next poll, and the next, until it is read
(`Leftovers.retry`), by the next controller too (UNSEEN_FILE, on the same boot and in the same pid namespace); only for the runs
it may be of, those whose runner started before it (a process this user left in that sleep for
good, no run's, would else be kept for every run ended after it, the record growing with the
runs). (The runner, ending each run, reads none: `runner._kill_escapees`.)

Not found: a process started since the fleet's last poll that drops the environment and leaves
the session, or that drops the environment and is of a runner a controller re-attached (reaped by
another, its session not swept) or of one that ended while no controller watched it.
On Slurm, nothing here: a job's processes are Slurm's to end, all of them, with the job (its
cgroup), a runner killed outright ending its job.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import queue
import threading
import time
from concurrent.futures import Future
from pathlib import Path

from autoresearch.files import read_json, write_json_atomic
from autoresearch.fleet import procs
from autoresearch.fleet.lineage import Lineage, written_from_here, written_here
from autoresearch.runner import GROUP_POLL_S, RESULT_VARIABLE, TERM_GRACE_S, result_file

log = logging.getLogger("autoresearch")

READ_LIMIT_S = 2.0  # how long one read of a process's environment is waited for (a hung mount's)
UNSEEN_FILE = "leftovers_unseen.json"  # in the campaign folder: `Leftovers`' processes not seen yet


class Leftovers:
    """One fleet's sweeps for what its runs left running, and the processes a sweep could not see
    yet: one in uninterruptible sleep, or whose environment's read hangs (`_Environs`), may be a
    run's, and is looked at again at each `retry` (each poll) until it can be read or has ended.
    Those are kept in `kept` where it is given, for a controller started again on this boot."""

    def __init__(self, kept: Path | None = None) -> None:
        self._environs = _Environs()
        self._kept = kept
        self._unseen: dict[tuple[int, str], set[bytes]] = _read_unseen(kept)  # (pid, start) -> markers
        self._written: dict[tuple[int, str], set[bytes]] | None = copy.deepcopy(self._unseen)  # `kept`'s

    def _keep(self) -> None:
        """Write the processes not seen yet to `kept`, where they differ from what it holds: after
        a write the disk refused, at the next chance whether or not they changed (a process in
        uninterruptible sleep for hours may not)."""
        if self._kept is not None and self._unseen != self._written:
            unseen = [
                [pid, started, sorted(m.decode(errors="surrogateescape") for m in markers)]
                for (pid, started), markers in self._unseen.items()
            ]
            try:
                write_json_atomic(self._kept, {**written_from_here(), "unseen": unseen})
            except OSError:  # (a disk that refuses it: tried again at the next poll)
                self._written = None
            else:
                self._written = copy.deepcopy(self._unseen)

    def end(
        self, exp_dir: Path, session: int | None = None, lineage: Lineage | None = None, since: str = ""
    ) -> None:
        """KILL every process left running by the run of `exp_dir` (`_kill_marked`), every
        process of `session` where it is given: its runner's, which its caller knows no later
        session to have (the runner's zombie holds its number), and each process of `lineage` (its
        runner's descendants as last seen, `lineage.lineages`) that is still the one seen, with all
        below it. `since`: its runner's start time (`lineage.runner_start`), where known: no process
        older is its run's."""
        marker = f"{RESULT_VARIABLE}={result_file(exp_dir)}".encode()
        self._kill_marked(marker, session, dict(lineage or {}), since)
        self._keep()

    def retry(self) -> None:
        """Look again at each process a sweep could not see: one still the same process and now
        readable is read, and every process of a run it is found to belong to killed."""
        self._retry()
        self._keep()

    def _retry(self) -> None:
        for (pid, started), markers in list(self._unseen.items()):
            state = procs.state_if_same(pid, started)
            if state == "D" or (state is not None and pid in self._environs.stuck):
                continue
            del self._unseen[(pid, started)]
            if state is None:  # ended, its pid perhaps another's
                continue
            environ = self._environs.read(pid)
            if environ is None:  # (its read hangs now: unseen again)
                self._unseen[(pid, started)] = markers
                continue
            for marker in markers & set(environ.split(b"\0")):
                self._kill_marked(marker)

    def _kill_marked(
        self, marker: bytes, session: int | None = None, lineage: Lineage | None = None, since: str = ""
    ) -> None:
        """KILL each process whose environment holds `marker`, or of `session`, or of `lineage` or
        below one of it, again until none is left or TERM_GRACE_S has passed (one may fork as it is
        killed: its child, reparented, is still of `lineage`, which grows as it is swept). One not
        seen is kept for `retry`. One KILLed already that is in uninterruptible sleep is not waited
        for: the KILL ends it as it leaves that sleep (a hung mount's may not for long)."""
        until = time.monotonic() + TERM_GRACE_S
        lineage = {} if lineage is None else lineage
        killed: set[tuple[int, str]] = set()
        while time.monotonic() < until:
            found = self._runs_processes(marker, session, lineage, killed, since)
            if not found:
                break
            for held in found:
                held.kill()
                held.release()
            time.sleep(GROUP_POLL_S)

    def _runs_processes(
        self, marker: bytes, session: int | None, lineage: Lineage, killed: set[tuple[int, str]], since: str
    ) -> list[procs.Held]:
        """This user's live processes other than this one that are of `session`, of `lineage` (to
        which those below one of it are added), or whose environment holds `marker`, held, and
        added to `killed` (by pid and start time), but for one of `killed` in uninterruptible
        sleep. One whose environment may not be read, in uninterruptible sleep (the read may wait
        for good) or whose read hangs, is kept unseen; not one started before `since` (the run's
        runner): it is not the run's."""
        found = []
        processes = procs.own_live_processes()
        if lineage:
            lineage.update(procs.below(lineage, processes))
        for pid, state, started, of_session, _parent in processes:
            if state == "D" and (pid, started) in killed:  # (its KILL pending)
                continue
            if lineage.get(pid) == started:
                held = procs.held_if(pid, lambda fields, started=started: fields[19] == started)
            elif of_session == session:
                held = procs.held_if(pid, lambda fields: procs.session(fields) == session)
            elif _started_before(started, since):
                continue
            elif state == "D" or pid in self._environs.stuck:
                self._unseen.setdefault((pid, started), set()).add(marker)
                continue
            else:
                held = self._held_if_marked(pid, marker)
            if held is not None:
                found.append(held)
                killed.add((pid, started))
        return found

    def _held_if_marked(self, pid: int, marker: bytes) -> procs.Held | None:
        """`pid` held (`procs.Held`) if its environment holds `marker`, else None. It is held first:
        where it is still the process held after, the environment read was its own."""
        held = procs.hold(pid)
        if held is None:
            return None
        environ = self._environs.read(pid)
        if environ is None:  # its read hangs: looked at again by `retry`
            with contextlib.suppress(OSError, IndexError):
                self._unseen.setdefault((pid, procs.start_time(pid)), set()).add(marker)
        elif marker in environ.split(b"\0"):
            return held
        held.release()
        return None


def _started_before(started: str, since: str) -> bool:
    """Whether a process that started at `started` began before `since` (start times in clock
    ticks since boot; False where either is not known)."""
    return started.isdigit() and since.isdigit() and int(started) < int(since)


def _read_unseen(kept: Path | None) -> dict[tuple[int, str], set[bytes]]:
    """The processes not seen yet that `kept` holds, where it was written from this kernel view
    (`lineage.written_here`: a start time counts from the boot, a pid is of its namespace); {} where
    there is none, or it cannot be read."""
    record = read_json(kept) if kept is not None else None
    if not record or not written_here(record):
        return {}
    with contextlib.suppress(TypeError, ValueError):
        return {
            (int(pid), str(started)): {str(m).encode(errors="surrogateescape") for m in markers}
            for pid, started, markers in record.get("unseen", [])
        }
    return {}


class _Environs:
    """Reads processes' environments in a thread, waiting READ_LIMIT_S for each. A read waits on
    the process's memory map's lock, which one stuck on a hung mount can hold for good: such a
    read costs one wait and the thread, once, not once per sweep. The process is then `stuck`, not
    read, until that read returns; another thread reads the rest."""

    def __init__(self) -> None:
        self.stuck: set[int] = set()
        self._lock = threading.Lock()
        self._reader: _Reader | None = None

    def read(self, pid: int) -> bytes | None:
        """`pid`'s environment (b"" where it ended or may not be read), or None where it is stuck."""
        if pid in self.stuck:
            return None
        if self._reader is None:
            self._reader = _Reader(self)
        answer = self._reader.ask(pid)
        with contextlib.suppress(TimeoutError):
            return answer.result(READ_LIMIT_S)
        with self._lock:
            if answer.done():
                return answer.result()
            self.stuck.add(pid)
            self._reader.abandoned = True
            self._reader = None
        log.warning(
            "reading the environment of process %d hangs (stuck on a hung mount?): it is looked at again once "
            "that read returns; until then, if a run left it running, it may share its slot with the next run",
            pid,
        )
        return None

    def returned(self, reader: _Reader, pid: int, answer: Future[bytes], environ: bytes) -> bool:
        """Give `environ` to whoever waits for it; True where `reader` was left to that read (the
        process is no longer stuck) and so ends."""
        with self._lock:
            answer.set_result(environ)
            if reader.abandoned:
                self.stuck.discard(pid)
            return reader.abandoned


class _Reader:
    """One thread reading the environments `_Environs` asks for, one at a time."""

    def __init__(self, environs: _Environs) -> None:
        self.abandoned = False
        self._environs = environs
        self._asked: queue.SimpleQueue[tuple[int, Future[bytes]]] = queue.SimpleQueue()
        threading.Thread(target=self._serve, name="leftovers-environ", daemon=True).start()

    def ask(self, pid: int) -> Future[bytes]:
        answer: Future[bytes] = Future()
        self._asked.put((pid, answer))
        return answer

    def _serve(self) -> None:
        while True:
            pid, answer = self._asked.get()
            if self._environs.returned(self, pid, answer, _read_environ(pid)):
                return


def _read_environ(pid: int) -> bytes:
    """`pid`'s environment as it was started; b"" where it ended or may not be read."""
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""
