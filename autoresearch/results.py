"""results.tsv: the reference loop's table, rebuilt from the study at any time.

The reference's columns come first (commit, val_bpb, memory_gb, status, description) so tools
written for it keep working; the campaign's own columns follow.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autoresearch.files import write_atomic
from autoresearch.policy import pooled_noise
from autoresearch.proposals import plain_line
from autoresearch.study import finished, status_of

log = logging.getLogger("autoresearch")

COLUMNS = [
    "commit",
    "val_bpb",
    "memory_gb",
    "status",
    "description",
    "trial",
    "wave",
    "tier",
    "gpu_type",
    "device",
    "partition",
    "node",
    "seed",
    "training_seconds",
    "mfu",
    "parent",
    "started_at",
    "ended_at",
    "reason",
    "version",
    "validates",
    "num_params",
]
# Runs that measure a train.py without having been picked for their result: repeated runs of one
# version among these are what seed noise and the frontier's value are estimated from.
MEASUREMENTS = ("baseline", "rerun")


def row_status(trial: FrozenTrial) -> str:
    """A finished trial's status as results.tsv shows it: its decision under its current name
    (an older study's "validated" reads "rerun"), else crash or discard. W&B shows the same."""
    return status_of(trial) or ("crash" if trial.state == TrialState.FAIL else "discard")


def row_of(trial: FrozenTrial) -> dict[str, Any]:
    attrs = trial.user_attrs
    crashed = trial.state == TrialState.FAIL
    return {
        "commit": attrs.get("commit", ""),
        "val_bpb": 0.0 if crashed else attrs.get("val_bpb", trial.value),
        "memory_gb": 0.0 if crashed else attrs.get("memory_gb", 0.0),
        "status": row_status(trial),
        "description": attrs.get("description", ""),
        "trial": trial.number,
        "wave": attrs.get("wave", ""),
        "tier": attrs.get("tier", ""),
        "gpu_type": attrs.get("gpu_type", ""),
        "device": attrs.get("device", ""),
        "partition": attrs.get("partition", ""),
        "node": attrs.get("node", ""),
        "seed": attrs.get("seed", ""),
        "training_seconds": attrs.get("training_seconds", ""),
        "mfu": attrs.get("mfu", ""),
        "parent": attrs.get("parent", ""),
        "started_at": attrs.get("started_at", ""),
        "ended_at": attrs.get("ended_at", ""),
        "reason": attrs.get("reason", ""),
        "version": attrs.get("run_key", ""),  # which train.py ran: equal versions are repeats
        "validates": attrs.get("validates", ""),  # the trial whose train.py a re-run measures
        "num_params": attrs.get("num_params", ""),  # the model's size: equal where a change kept its shape
    }


def row_ran(row: dict[str, Any]) -> bool:
    """Whether a row's experiment ran (`budget.experiment_ran`, read from the row): launched on a
    partition, its runner started and ended. Invalid and skipped candidates never were, and a run
    lost or cancelled before it started on a node has no start."""
    return (
        bool(row["partition"]) and row["started_at"] not in ("", None) and row["ended_at"] not in ("", None)
    )


def rerun_values(table: list[dict[str, Any]]) -> dict[int, dict[str, list[float]]]:
    """The val_bpb of each trial's re-runs, by the trial they re-ran, then by tier, screen first:
    tiers run on different GPUs, whose val_bpb for one train.py differ by more than a change's."""
    values: dict[int, dict[str, list[float]]] = defaultdict(dict)
    for r in sorted(table, key=lambda r: r["tier"] != "screen"):
        if r["status"] == "rerun" and r["validates"] != "":
            values[int(r["validates"])].setdefault(r["tier"], []).append(r["val_bpb"])
    return values


def rows(study: optuna.Study, made: dict[int, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Finished experiments in the order they finished. `made`: rows made before, by trial number,
    kept up here (a finished trial no longer changes), for a caller that asks again and again."""
    made = {} if made is None else made
    for t in finished(study):
        if t.number not in made:
            made[t.number] = row_of(t)
    return sorted(made.values(), key=lambda r: (r["ended_at"] or 0.0, r["trial"]))


def _runs_of(table: list[dict[str, Any]], version: str, tier: str) -> list[dict[str, Any]]:
    return [r for r in table if r["version"] == version and r["tier"] == tier]


def measurements(table: list[dict[str, Any]], version: str, tier: str) -> list[float]:
    """val_bpb of the runs of one train.py on one tier: its baseline and re-runs; the run that got
    it kept only while there are none (that one was picked for being low)."""
    runs = _runs_of(table, version, tier)
    repeats = [r["val_bpb"] for r in runs if r["status"] in MEASUREMENTS]
    return repeats or [r["val_bpb"] for r in runs if r["status"] == "keep"]


def _by_seed(runs: list[dict[str, Any]]) -> dict[int, float]:
    """val_bpb by seed, the mean where a seed ran twice (runs without a seed left out)."""
    values: dict[int, list[float]] = defaultdict(list)
    for r in runs:
        if r["seed"] not in ("", None):
            values[int(r["seed"])].append(r["val_bpb"])
    return {seed: statistics.fmean(v) for seed, v in values.items()}


def measured_by_seed(table: list[dict[str, Any]], version: str, tier: str) -> dict[int, float]:
    """`measurements` without the fallback, by seed (the mean where a seed ran twice): what a
    promoted change's re-runs are compared with, seed for seed."""
    return _by_seed([r for r in _runs_of(table, version, tier) if r["status"] in MEASUREMENTS])


def frontier_measured(table: list[dict[str, Any]], tier: str = "screen") -> tuple[int | None, list[float]]:
    """The runs the frontier is judged by on a tier: those of the latest kept version measured
    there (with that keep's trial number), else the baseline's (None). `table` is `rows()`."""
    keep, values = _frontier_keep(table, tier)
    if keep is None:
        return None, [r["val_bpb"] for r in _baselines(table, tier)]
    return keep["trial"], values


def _frontier_keep(table: list[dict[str, Any]], tier: str) -> tuple[dict[str, Any] | None, list[float]]:
    """The row of the latest kept version measured on a tier, with its measurements there; (None,
    []) where none is: the baseline is the frontier."""
    for keep in reversed([r for r in table if r["status"] == "keep"]):
        if values := measurements(table, keep["version"], tier):
            return keep, values
    return None, []


def _baselines(table: list[dict[str, Any]], tier: str) -> list[dict[str, Any]]:
    return [r for r in table if r["status"] == "baseline" and r["tier"] == tier]


def frontier_runs(table: list[dict[str, Any]], tier: str = "screen") -> list[float]:
    return frontier_measured(table, tier)[1]


def frontier_value(table: list[dict[str, Any]], tier: str = "screen") -> tuple[float | None, float | None]:
    """The baseline mean on a tier and the frontier's mean there, as the policy judges against it."""
    baselines = [r["val_bpb"] for r in _baselines(table, tier)]
    runs = frontier_runs(table, tier)
    return (
        statistics.fmean(baselines) if baselines else None,
        statistics.fmean(runs) if runs else None,
    )


@dataclass(frozen=True)
class Comparison:
    """The start and the frontier on one tier as the keep rule compares two versions: their means
    over the seeds both ran (`seeds` of them), so a seed's luck is in both figures or neither; over
    all their runs where they share no seed (`seeds` 0: such as a frontier measured only by its run
    at a later screening seed, 1042 on). `picked`: the frontier's figure is only the run that kept it,
    not re-run there yet (a campaign stopped right after the keep), which its low value chose."""

    baseline: float
    frontier: float
    seeds: int
    picked: bool = False

    @property
    def change(self) -> float:
        return self.frontier - self.baseline

    def over(self) -> str:
        """What the two means are over, in words (a reader comparing them with the keep's
        'on the same seeds' must know whether they are alike, and that a picked run overstates
        the gain: a run kept for being low is lower than the version's mean)."""
        if self.seeds:
            means = f"means over the same {self.seeds} seed{'' if self.seeds == 1 else 's'}"
        else:
            means = "means over all their runs: no seed ran both"
        if self.picked:
            return f"{means}; the frontier's is the run that kept it, not re-run yet"
        return means

    def said(self) -> str:
        """`val_bpb A -> B (over)`, as the closing line says it."""
        return f"val_bpb {self.baseline:.6f} -> {self.frontier:.6f} ({self.over()})"


def frontier_by_seed(table: list[dict[str, Any]], tier: str = "screen") -> tuple[dict[int, float], bool]:
    """`frontier_measured`'s runs by seed: the latest kept version's measurements on a tier (its
    own run while it has none, said by True), else the baseline's."""
    keep, _ = _frontier_keep(table, tier)
    if keep is None:
        return _by_seed(_baselines(table, tier)), False
    if repeats := measured_by_seed(table, keep["version"], tier):
        return repeats, False
    return _by_seed([r for r in _runs_of(table, keep["version"], tier) if r["status"] == "keep"]), True


def compare(table: list[dict[str, Any]], tier: str = "screen") -> Comparison | None:
    """The baseline and the frontier on a tier over the seeds both ran (`Comparison`); None
    where the tier has no baseline. The plain means (`frontier_value`) are over different seeds
    once a change is kept (the start's baselines at 42-45, its re-runs at 43-45 and 1042), and a
    seed's luck then moves the difference by more than a kept change may gain."""
    baseline, frontier = frontier_value(table, tier)
    if baseline is None or frontier is None:
        return None
    start = _by_seed(_baselines(table, tier))
    now, picked = frontier_by_seed(table, tier)
    if shared := sorted(set(start) & set(now)):
        return Comparison(
            statistics.fmean(start[s] for s in shared),
            statistics.fmean(now[s] for s in shared),
            len(shared),
            picked,
        )
    return Comparison(baseline, frontier, 0, picked)


def tier_noise(table: list[dict[str, Any]], tier: str) -> float | None:
    """Seed-to-seed std of val_bpb on a tier, pooled over every train.py run there more than once."""
    groups: dict[str, list[float]] = {}
    for r in table:
        if r["status"] in MEASUREMENTS and r["tier"] == tier:
            groups.setdefault(r["version"], []).append(r["val_bpb"])
    return pooled_noise(list(groups.values()))


def _format(value: Any) -> str:
    if value is None:  # a figure the run's result lacked: unknown, an empty cell
        return ""
    if isinstance(value, float):
        return f"{value:.6f}"
    return plain_line(str(value))  # one row a line, one cell a column


def render(table: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, delimiter="\t", lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in table:
        writer.writerow([_format(row[c]) for c in COLUMNS])
    return out.getvalue()


def write_results(table: list[dict[str, Any]], path: Path) -> None:
    """Rewrite results.tsv from the study's `rows` (atomically: readers never see half a file)."""
    keep_hand_edit(path)
    write_atomic(path, render(table))


def keep_hand_edit(path: Path) -> None:
    """A results.tsv with a column this version never writes was edited by hand (notes added
    beside the rows): the rewrite from the study would drop them unsaid, so the file is moved
    aside first, to the first free `results.edited[.N].tsv`, and a warning says where."""
    try:
        with path.open(encoding="utf-8", errors="replace") as f:
            header = f.readline().rstrip("\r\n").split("\t")
    except OSError:  # (none yet; or one that cannot be read, replaced as ever)
        return
    added = [column for column in header if column and column not in COLUMNS]
    if not added:
        return
    names = (f"{path.stem}.edited{f'.{n}' if n else ''}{path.suffix}" for n in range(10**6))
    aside = next(path.with_name(name) for name in names if not path.with_name(name).exists())
    os.replace(path, aside)
    log.warning(
        "%s had column(s) it is not written with (%s), an edit by hand: kept as %s, as %s is "
        "rebuilt from the study",
        path.name,
        ", ".join(added),
        aside.name,
        path.name,
    )
