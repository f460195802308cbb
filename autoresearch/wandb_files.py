"""W&B's offline run files, read to tell a whole run from one that a killed controller tore.

A `.wandb` file is a log of protobuf records in 32 KiB blocks, each record cut into chunks with a
7-byte header (CRC-32C, length, chunk type), after a 7-byte file header. A run's last record is its
exit, in the file once `run.finish()` returns. W&B's SDK ships no reader (`wandb sync` reads with
its Go service), so this is one; the tests read the runs a campaign wrote back with it too.
"""

from __future__ import annotations

import contextlib
import struct
from collections import deque
from collections.abc import Iterator
from pathlib import Path

from google.protobuf.message import DecodeError
from wandb.proto import wandb_internal_pb2 as pb

MAGIC = b":W&B"
BLOCK = 32768
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def record_bytes(data: bytes) -> Iterator[bytes]:
    """Each whole record of a run file's bytes, in order. A record cut off by a kill, or a chunk
    that is no chunk, ends the file: what follows was never written whole."""
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:  # a block's tail too short for a header is padding
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        chunk = data[pos + HEADER : pos + HEADER + length]
        if kind not in (FULL, FIRST, MIDDLE, LAST) or len(chunk) < length:
            return
        pos += HEADER + length
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            yield pending


def records(path: Path) -> list[pb.Record]:
    """The whole records of a run file; a file that is no W&B run file has none."""
    data = path.read_bytes()
    if not data.startswith(MAGIC):
        return []
    return [pb.Record.FromString(record) for record in record_bytes(data)]


def run_file(run_dir: Path) -> Path | None:
    """A run folder's data file; None where a controller was killed before W&B wrote it."""
    return next(run_dir.glob("run-*.wandb"), None)


def run_folders(wandb_dir: Path) -> list[Path]:
    """The run folders under a W&B folder, offline and online, in the order they were begun (their
    names start with the time, after `offline-` for an offline run's)."""
    folders = [*wandb_dir.glob("offline-run-*"), *wandb_dir.glob("run-*")]
    return sorted((f for f in folders if f.is_dir()), key=lambda f: f.name.removeprefix("offline-"))


def run_place(run_dir: Path) -> tuple[str, str] | None:
    """The project and entity a run was sent to, as its data file's run record says (entity empty
    where W&B did not know it: an offline run's default); None where no run record reads."""
    path = run_file(run_dir)
    data = path.read_bytes() if path is not None else b""
    for record in record_bytes(data) if data.startswith(MAGIC) else ():
        with contextlib.suppress(DecodeError):
            r = pb.Record.FromString(record)
            if r.WhichOneof("record_type") == "run":
                return r.run.project, r.run.entity
    return None


def is_whole(run_dir: Path) -> bool:
    """Whether the run's data file ends with its exit record. `wandb sync` refuses a whole folder of
    runs for one file holding no run record ("Failed to read ...: EOF"), and replays one without its
    exit as a failed run."""
    path = run_file(run_dir)
    data = path.read_bytes() if path is not None else b""
    last = deque(record_bytes(data) if data.startswith(MAGIC) else (), maxlen=1)
    return bool(last) and pb.Record.FromString(last[0]).WhichOneof("record_type") == "exit"


def is_synced(run_dir: Path) -> bool:
    """Whether `wandb sync` sent the run: it marks a data file sent with `<file>.synced` beside it
    (and passes over a marked run at its next sync)."""
    path = run_file(run_dir)
    return path is not None and path.with_name(f"{path.name}.synced").exists()
