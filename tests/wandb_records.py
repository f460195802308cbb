"""Read an offline W&B run back from its `.wandb` file, with W&B's own record schema and the
campaign's own reader of the file (`autoresearch.wandb_files`)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2 as pb

from autoresearch.wandb_files import records


@dataclass
class OfflineRun:
    run_id: str
    project: str = ""
    entity: str = ""
    group: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    exit_code: int | None = None


def finished_records(path: Path) -> list[pb.Record]:
    """The run file's records once they hold its exit record: `run.finish()` returns before W&B's
    service has written the file (read at once, the last run of a test was found with no record
    at all about once in twenty), so it is read again until then, or for at most 30 s."""
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        try:
            found = records(path)
        except Exception:  # (a record being written: read again)
            found = []
        if any(r.WhichOneof("record_type") == "exit" for r in found):
            return found
        time.sleep(0.05)
    return records(path)


def read_run(run_dir: Path) -> OfflineRun:
    (path,) = run_dir.glob("run-*.wandb")
    run = OfflineRun(run_id=path.stem.removeprefix("run-"))
    for r in finished_records(path):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            run.project, run.entity = r.run.project, r.run.entity
            run.group, run.job_type, run.tags = r.run.run_group, r.run.job_type, list(r.run.tags)
            run.config.update({u.key: json.loads(u.value_json) for u in r.run.config.update})
        elif kind == "config":
            run.config.update({u.key: json.loads(u.value_json) for u in r.config.update})
        elif kind == "history":
            run.history.append(
                {i.key or ".".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
            )
        elif kind == "summary":
            run.summary.update({u.key: json.loads(u.value_json) for u in r.summary.update if u.key})
        elif kind == "files":
            run.files += [f.path for f in r.files.files]
        elif kind == "exit":
            run.exit_code = r.exit.exit_code
    return run


def offline_runs(wandb_dir: Path) -> dict[str, list[OfflineRun]]:
    """Every offline run under a W&B folder, by run id (a run sent twice appears twice)."""
    runs: dict[str, list[OfflineRun]] = {}
    for run_dir in sorted(wandb_dir.glob("offline-run-*")):
        run = read_run(run_dir)
        runs.setdefault(run.run_id, []).append(run)
    return runs
