"""results.tsv: the reference loop's table, rebuilt from the study at any time.

The reference's columns come first (commit, val_bpb, memory_gb, status, description) so tools
written for it keep working; the campaign's own columns follow.
"""

from __future__ import annotations

import csv
import io
import os
import statistics
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autoresearch.study import finished

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
]


def row_of(trial: FrozenTrial) -> dict[str, Any]:
    attrs = trial.user_attrs
    crashed = trial.state == TrialState.FAIL
    return {
        "commit": attrs.get("commit", ""),
        "val_bpb": 0.0 if crashed else attrs.get("val_bpb", trial.value),
        "memory_gb": 0.0 if crashed else attrs.get("memory_gb", 0.0),
        "status": attrs.get("status", "crash" if crashed else "discard"),
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
    }


def rows(study: optuna.Study) -> list[dict[str, Any]]:
    """Finished experiments in the order they finished."""
    done = sorted(finished(study), key=lambda t: (t.user_attrs.get("ended_at") or 0.0, t.number))
    return [row_of(t) for t in done]


def frontier_value(table: list[dict[str, Any]], tier: str = "screen") -> tuple[float | None, float | None]:
    """The baseline mean on a tier and the frontier there, as the policy judges against it: the
    last keep on that tier, else that mean. `table` is `rows()`, in the order results finished."""
    baselines = [r["val_bpb"] for r in table if r["status"] == "baseline" and r["tier"] == tier]
    baseline = statistics.fmean(baselines) if baselines else None
    kept = [r["val_bpb"] for r in table if r["status"] == "keep" and r["tier"] == tier]
    return baseline, kept[-1] if kept else baseline


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6f}"
    return str(value).replace("\t", " ").replace("\n", " ")


def render(table: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, delimiter="\t", lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in table:
        writer.writerow([_format(row[c]) for c in COLUMNS])
    return out.getvalue()


def write_results(study: optuna.Study, path: Path) -> list[dict[str, Any]]:
    """Rewrite results.tsv from the study (atomically: readers never see half a file)."""
    table = rows(study)
    tmp = path.with_suffix(".tsv.tmp")
    tmp.write_text(render(table))
    os.replace(tmp, path)
    return table
