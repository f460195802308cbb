"""The fleet interface the campaign loop schedules against.

Small on purpose (submitit's executor is the model): submit experiments, poll for finished ones,
wait for something to happen. A local process pool, Slurm arrays and the simulator's virtual
cluster all fit behind it, so the loop's scheduling code is the same everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

UNNAMED_GPU = "gpu"  # a local GPU's type where nvidia-smi did not name it (`gpus.gpu_name`)


@dataclass(frozen=True)
class Pool:
    """A set of interchangeable slots: one GPU type, one price."""

    name: str
    slots: int
    gpu_type: str
    price_per_gpu_hour: float = 0.0
    partition: str = ""
    threads: int = 0  # CPU threads each slot's torch gets (0: not set by the fleet)


@dataclass(frozen=True)
class JobSpec:
    trial: int
    exp_dir: Path
    pool: str


@dataclass(frozen=True)
class Finished:
    """An experiment the fleet is done with; `outcome` is the runner's outcome.json or the fleet's
    account of why there is none (status "lost" with a reason)."""

    trial: int
    outcome: dict[str, Any]


class Fleet(Protocol):
    pools: dict[str, Pool]

    def free_slots(self, pool: str) -> int:
        """Slots of `pool` that could start an experiment now."""
        ...

    def submit(self, jobs: list[JobSpec]) -> dict[int, str]:
        """Start experiments; returns a handle per trial, stored in the study for re-attaching."""
        ...

    def reattach(self, job: JobSpec, handle: str) -> bool:
        """Adopt an experiment a previous controller started; False if it is gone."""
        ...

    def poll(self) -> list[Finished]:
        """Experiments that ended since the last poll."""
        ...

    def wait(self, seconds: float) -> None:
        """Block up to `seconds`, or less when something may have finished."""
        ...

    def note_node(self, pool: str, outcome: dict[str, Any]) -> None:
        """Where an experiment that ended ran, and how it ended: a fleet that places jobs on nodes
        keeps out those that cannot run experiments. A resumed campaign replays its study here."""
        ...

    def running(self) -> int: ...

    def shutdown(self, cancel: bool) -> None:
        """Stop watching; with `cancel`, also end every experiment still running or queued."""
        ...
