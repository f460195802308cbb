"""Small files the controller and the runner share, written so a process killed mid-write
leaves nothing a reader would misread: whole files (JSON, results.tsv, the report and its plot)
replaced at once, and append-only files of one record a line whose torn last line is dropped."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary file beside `path` for the block to write, put in its place whole when the block
    ends: a writer killed part-way leaves the one before, never a torn one. Where the write or
    the replace fails (a full disk, `path` a folder) the temporary is removed, not left behind.
    The temporary is this writer's own (its process and thread in its name): two writers of one
    file at once, the controller redrawing progress.png while `autoresearch report` draws it, shared
    one, and one's rename published the other's half-written file, then the other's failed.
    A refused write that names no file is given `path`'s name (`name_the_file`)."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        name_the_file(err, path)
        raise


def name_the_file(err: BaseException, path: Path | str) -> None:
    """Give a refused write that names no file (a full disk's ENOSPC, RLIMIT_FSIZE's EFBIG, raised
    by a write, not an open) the name of the file it was writing: said without one, a user cannot
    tell which of a campaign's files the disk refused (`write_failure`)."""
    if isinstance(err, OSError) and err.filename is None:
        err.filename = str(path)


TEMPORARY_NAME = re.compile(r"\.(\d+)-\d+\.tmp$")  # `replacing`'s: the writer's pid, then its thread


def alive_here(pid: int) -> bool:
    """Whether process `pid` of this host lives (another user's too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def process_start(pid: int) -> str | None:
    """When process `pid` of this host began, in clock ticks since boot (/proc/PID/stat's field
    22): a pid is reused once its process ended, a pid and its start name one process. None where
    /proc does not show it (ended, hidden from this user, no /proc)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def dead_writers_temporaries(folder: Path) -> list[Path]:
    """`replacing`'s temporaries in `folder` whose writer, a process of this host, is gone: one
    killed mid-write (kill -9, a power cut) left its temporary for good. A live writer's, such as
    `autoresearch report` redrawing the plot beside the controller, or this process's own, is
    never among them: its rename would fail."""
    found = []
    with contextlib.suppress(OSError):  # (no such folder)
        for path in folder.iterdir():
            match = TEMPORARY_NAME.search(path.name)
            if match and int(match[1]) != os.getpid() and not alive_here(int(match[1])):
                found.append(path)
    return found


# Any writer's temporary of an experiment folder: `replacing`'s (pid, thread), and the harness's
# result (prepare.py's: pid, then a hex tag of its process).
EXPERIMENT_TEMPORARY_NAME = re.compile(r"\.\d+-[0-9a-f]+\.tmp$")


# A whole-file write takes milliseconds: a temporary untouched this long is no live writer's. Its
# run ended is not enough, since the fleet can say so while a writer still writes: a Slurm run past
# its deadline is scancelled and reported done while its runner writes outcome.json, and a lost
# run Slurm requeued can be running when the controller gives it up.
ENDED_WRITE_S = 60.0


def experiment_temporaries(exp_dir: Path) -> list[Path]:
    """The writers' temporaries in an experiment folder, whatever their age."""
    with contextlib.suppress(OSError):  # (no such folder)
        return [path for path in exp_dir.iterdir() if EXPERIMENT_TEMPORARY_NAME.search(path.name)]
    return []


def ended_writers_temporaries(temporaries: list[Path]) -> list[Path]:
    """Of the temporaries in the folder of an experiment whose run has ended (`experiment_temporaries`),
    those untouched for ENDED_WRITE_S: each is a writer's killed mid-write (a runner or train.py
    killed by the OOM killer, a controller's kill -9), whatever host it ran on; a younger one may
    be a live one's, whose rename would fail with its temporary gone."""
    return [path for path in temporaries if _untouched_for(path, ENDED_WRITE_S)]


def _untouched_for(path: Path, seconds: float) -> bool:
    try:
        return time.time() - path.stat().st_mtime > seconds
    except FileNotFoundError:  # (its writer renamed it meanwhile)
        return False


def write_atomic(path: Path, data: str | bytes) -> None:
    """Through a temporary name and a rename, so a reader never sees half a file."""
    with replacing(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)


# A write the file system refuses, whatever the code: a full disk or quota, a read-only mount,
# no permission, a file too large. Running the command again, once that is mended, goes on.
WRITE_REFUSED = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG)


# What a full disk or a quota refuses a write with: the room left tells how much to free.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)

# The disk's refusals of a runner's or a worker's own files, which every run after it would meet
# alike: full, a quota, or mounted read-only (a file system remounted so after an error).
DISK_REFUSALS = (*DISK_FULL, errno.EROFS)


def free_bytes(folder: Path) -> int | None:
    """The room left to this user on the disk of `folder` (None where it cannot be asked)."""
    try:
        disk = os.statvfs(folder)
    except OSError:
        return None
    return disk.f_bavail * disk.f_frsize


def free_inodes(folder: Path) -> int | None:
    """The files this user may still make on the disk of `folder` (its inodes left); None where it
    cannot be asked, or the disk counts none (btrfs says f_files 0: it makes them as it goes)."""
    try:
        disk = os.statvfs(folder)
    except OSError:
        return None
    return disk.f_favail if disk.f_files else None


def in_kib(size: int | None) -> str:
    return "an unknown amount" if size is None else f"{size >> 10} KiB"


def disk_room(folder: Path, where: str) -> str:
    """The room left on the disk of `folder` in words, and what ran out where that is not its
    bytes: a disk of many small files runs out of inodes with bytes to spare, and one mounted
    read-only refuses every write; told only the bytes free, the user would free bytes and nothing
    would change. `where` places the room ('on its disk', 'in its folder'). (A disk that counts
    no inodes, btrfs, says f_files 0.)"""
    try:
        disk = os.statvfs(folder)
    except OSError:
        return f"{in_kib(None)} free {where}"
    free = f"{in_kib(disk.f_bavail * disk.f_frsize)} free"
    if disk.f_flag & os.ST_RDONLY:
        return "mounted read-only"
    if disk.f_files and not disk.f_favail:
        return f"no inodes left {where}, {free}"
    return f"{free} {where}"


def write_failure(err: OSError, folder: Path) -> str:
    """An OSError of a write into `folder` in words: the system's, and the file it names where
    that is not `folder` itself (a full disk's or an oversized file's error names none); of a
    writer's temporary (`replacing`), the file it was to replace. A full disk's or a quota's says
    what its disk has left (`disk_room`), so the user knows what to free; a quota's says it is one,
    which statvfs cannot show, its disk's room beside it."""
    filename = err.filename2 if err.filename2 is not None else err.filename
    if filename is not None:
        filename = TEMPORARY_NAME.sub("", str(filename))
    said = [str(filename)] if filename is not None and str(filename) != str(folder) else []
    if err.errno == errno.EDQUOT:
        said.append(f"over quota ({disk_room(folder, 'on its disk')})")
    elif err.errno == errno.ENOSPC:
        said.append(disk_room(folder, "on its disk"))
    return f"{err.strerror or err}" + (f" ({', '.join(said)})" if said else "")


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(data, indent=1, sort_keys=True))


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file written by `write_json_atomic`, or None while it is absent, or where it cannot
    be what that wrote (torn by a crash, not text, not an object, a folder, unreadable): one damaged
    by hand or by a disk is read as the missing one it stands for, never a traceback."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):  # unreadable (absent, a folder), not JSON, too nested
        return None
    return data if isinstance(data, dict) else None


def finite_number(value: Any) -> bool:
    """Whether a figure read back from a file is a finite number (not a bool, not NaN, not an
    integer too large for a float): what untrusted writers (train.py's result, a ledger edited by
    hand) must give before it is added up or rounded."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond a float's range
        return False


def after_last_newline(path: Path, size: int, chunk: int = 1 << 16) -> int:
    """The offset just past the file's last newline (0 if none), read from its end backwards."""
    with open(path, "rb") as f:
        end = size
        while end > 0:
            start = max(0, end - chunk)
            f.seek(start)
            found = f.read(end - start).rfind(b"\n")
            if found >= 0:
                return start + found + 1
            end = start
    return 0


def append_line(path: Path, line: str, whole: Callable[[bytes], bool] = lambda last: False) -> int:
    """Append one record to a file of one record a line; the bytes of a torn last line dropped.
    A writer killed mid-line leaves a torn last line: it is cut off first, else this record would
    be glued onto it and read as garbage (or, in a list of numbers, as another number). A last
    line without its newline that `whole` finds a complete record (a file edited by hand, whose
    editor wrote no newline at its end) is kept, and ended with one."""
    dropped = 0
    with open(path, "a+b") as f:
        size = f.seek(0, os.SEEK_END)
        if size:
            f.seek(size - 1)
            if f.read(1) != b"\n":
                start = after_last_newline(path, size)
                f.seek(start)
                if whole(f.read(size - start)):
                    f.write(b"\n")
                else:
                    f.truncate(start)
                    dropped = size - start
        f.write(line.encode() + b"\n")
    return dropped


def complete_lines(path: Path) -> list[str]:
    """The records of a file `append_line` writes, without a torn last line ([] while absent)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    return text[: text.rfind("\n") + 1].splitlines()
