"""Where a writer killed mid-write may have left a temporary in an experiment folder, so a start
looks there alone.

A start looked in the folder of every run that had ended, for temporaries the last controller
left too young to remove: thousands of folder listings in a long campaign (hundreds of runs, each
resume adding more), each a round trip to the server where the campaign lives on NFS. A folder is
now listed, in SWEEP_FILE, from its run's end until a look finds no temporary there once no writer
of its run can still be writing (the fleet's kill deadline of a run, past its end: a Slurm runner
scancelled at its deadline still writes its outcome, a run Slurm requeued may still run).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from pathlib import Path

from autoresearch.files import (
    ended_writers_temporaries,
    experiment_temporaries,
    finite_number,
    read_json,
    write_json_atomic,
)

log = logging.getLogger("autoresearch")

SWEEP_FILE = "temporaries_to_sweep.json"  # in the campaign folder: experiment folder -> looked at until


def remove_temporaries(temporaries: Iterable[Path]) -> None:
    for temporary in temporaries:
        temporary.unlink(missing_ok=True)
        log.warning("removed %s, left by a writer killed mid-write", temporary)


class TemporarySweep:
    """The experiment folders still to look in for killed writers' temporaries, kept in a file."""

    def __init__(self, campaign_dir: Path, writers_for: float) -> None:
        self._experiments = campaign_dir / "experiments"
        self._path = campaign_dir / SWEEP_FILE
        self._writers_for = writers_for  # how long after a run's end one of its writers may write
        listed = read_json(self._path)
        # None: no list (a campaign begun before it was kept, or the file damaged): every ended
        # run's folder is looked in once
        self._until: dict[str, float] | None = None if listed is None else _folders(listed)

    @property
    def kept(self) -> bool:
        """Whether the folders to look in are known (else each ended run's must be looked in)."""
        return self._until is not None

    def sweep(self, ended: Iterable[Path] = (), writing: bool = True) -> None:
        """Remove the temporaries killed writers left (`files.ended_writers_temporaries`) in the
        folders of the runs that have just `ended` and in those listed, and keep listed each folder
        that holds a younger one, or whose run's writers may still write (`writing`: the runs of
        `ended` ended now; False for those that ended long before, at a first start)."""
        now = time.time()
        until = dict(self._until or {})
        for exp_dir in ended:
            until[exp_dir.name] = max(until.get(exp_dir.name, now), now + self._writers_for * writing)
        for name, by in list(until.items()):
            found = experiment_temporaries(self._experiments / name)  # (one listing: a round trip on NFS)
            killed = ended_writers_temporaries(found)
            remove_temporaries(killed)
            if now >= by and len(killed) == len(found):
                del until[name]
        if until != self._until:
            write_json_atomic(self._path, until)
            self._until = until


def _folders(listed: dict) -> dict[str, float]:
    """The file's folders, those a hand edit left no experiment folder's name and time dropped."""
    return {name: float(by) for name, by in listed.items() if name.isdigit() and finite_number(by)}
