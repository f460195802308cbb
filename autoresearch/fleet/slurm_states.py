"""What Slurm says about jobs: sacct's states (squeue's while accounting is down) and squeue's
pending reasons, read and judged.

The fleet (fleet.slurm) asks these questions once per poll for every job at once; what a state
means for an experiment (lost and re-queued, a crash, still running) is decided here, so it can
be tested on sacct's text without a cluster.
"""

from __future__ import annotations

import logging
import re
import subprocess
from datetime import datetime
from typing import Any, NamedTuple

from autoresearch.config import PartitionConfig

log = logging.getLogger("autoresearch")

DEFAULT_MAX_ARRAY_SIZE = 1001  # Slurm's MaxArraySize unless a site sets it

# Slurm's terminal states, and what each means for the experiment.
INFRA_STATES = {"NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "REQUEUED", "DEADLINE", "REVOKED", "RESTARTED"}
# An attempt that a later one followed, its cause in no record: squeue's restart count while sacct
# fails, or sacct's record of an attempt whose end never came (`STALE`, below). A node failure is
# as likely as a requeue, so it costs a retry: free, an experiment that kills its node ran again
# for the whole outage.
RESTARTED = "RESTARTED"
# sacct's record of an attempt still active while a later attempt follows: slurmdbd has not
# written how it ended, which decides what it costs: REQUEUED (`scontrol requeue`) is free,
# NODE_FAIL (which also requeues a --requeue job, and which a train.py that exhausts its node's
# memory causes) costs a retry. Not over until the end is written; one never written (lost
# with slurmctld: a runaway job) is RESTARTED.
STALE = "STALE"
EXPERIMENT_STATES = {"OUT_OF_MEMORY": "crash", "TIMEOUT": "timeout", "FAILED": "crash"}
# An ordinary end (exit status 0) with no outcome.json: the runner writes one at every end of
# train.py, crashes included, and ends FAILED where it cannot, so no end of the change leaves this.
# Its record was closed without the runner's end: a runaway job's (lost with slurmctld), which
# `sacctmgr show runawayjobs` sets COMPLETED. Lost, a retry, not the change's crash.
COMPLETED = "COMPLETED"
COMPLETED_WITHOUT_A_RESULT = (
    "Slurm COMPLETED without a result, which the runner writes at every end of train.py: its job's "
    "record was closed without the runner's end (a runaway job's, by sacctmgr)"
)
CANCELLED = "CANCELLED"
# Taken off its node from outside, by a job of higher priority or a person's `scontrol requeue`:
# nothing wrong with the run nor the node, so re-running it costs none of the experiment's retries
# (on a preemptible partition it may happen again and again). By state, what the campaign calls it.
TAKEN_OFF = {"PREEMPTED": "preempted", "REQUEUED": "requeued"}
ACTIVE_STATES = {"", "PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED"}
# Slurm's reasons for holding a job pending that waiting does not cure, and the settings behind them.
NEVER_STARTS = {
    "PartitionConfig": "the request exceeds what the partition allows (cpus_per_task, mem_gb, gres, time_limit_min)",
    "PartitionTimeLimit": "time_limit_min exceeds the partition's time limit",
    "PartitionNodeLimit": "the request needs more nodes than the partition allows",
    "QOSMaxWallDurationPerJobLimit": "time_limit_min exceeds the QOS's limit",
    "InvalidAccount": "the account is not valid for this partition",
    "InvalidQOS": "the QOS is not valid for this partition",
    "BadConstraints": "no node has the features asked for (constraint)",
}

# Reasons for a job held pending while an administrator keeps its partition or every node it may
# run on out of service (maintenance, a node drained): it starts when they are back, and until
# then the campaign would wait in silence.
CLOSED = {
    "PartitionDown": "the partition is down",
    "PartitionInactive": "the partition is inactive",
    "Nodes required for job are DOWN, DRAINED or reserved for jobs in higher priority partitions": (
        "every node it may run on is out of service or reserved"
    ),
}

# Reasons for a job held until a person releases it (scontrol hold, sbatch --hold): it waits, and
# its experiments with it, however long the campaign polls.
HELD = {
    "JobHeldUser": "held by its user",
    "JobHeldAdmin": "held by an administrator",
}


def outcome_for_state(state: str, trial: int) -> dict[str, Any] | None:
    """The outcome of a job that ended in `state` without writing one, or None if it is not over."""
    base = state.split()[0] if state else "UNKNOWN"
    if base in INFRA_STATES:
        said = "Slurm restarted it (no record says why)" if base == RESTARTED else f"Slurm {base}"
        lost = {"trial": trial, "status": "lost", "reason": said}
        return {**lost, "taken_off": TAKEN_OFF[base]} if base in TAKEN_OFF else lost
    if base.startswith(CANCELLED):
        return {"trial": trial, "status": "cancelled", "reason": f"Slurm {state}"}
    if base == COMPLETED:
        return {"trial": trial, "status": "lost", "reason": COMPLETED_WITHOUT_A_RESULT}
    if base in EXPERIMENT_STATES:
        return {"trial": trial, "status": EXPERIMENT_STATES[base], "reason": f"Slurm {base} without a result"}
    return None


def attempt_state(attempts: list[str], attempt: int) -> str:
    """The state of one attempt of a job ('' if sacct does not show it yet); STALE for a record
    a later attempt follows while it still says the attempt is active (REQUEUED is its end)."""
    if attempt >= len(attempts):
        return ""
    state = attempts[attempt]
    if attempt < len(attempts) - 1 and is_active(state) and not state.startswith("REQUEUED"):
        return STALE
    return state


class SacctAnswer(NamedTuple):
    """sacct's word on jobs: each job or array task's states, oldest attempt first; for how
    long its latest attempt has stood suspended (`scontrol suspend`) in all, in seconds, 0 for
    none: Slurm's own count, which a controller started again reads as the first did, and which
    stands over squeue's estimate of it (off by any skew between the two clocks) for every job listed;
    and its latest attempt's exit status (ExitCode's first part; None where it has none), the one
    word of a runner whose disk refused its own files (runner.DISK_REFUSED_EXIT)."""

    states: dict[str, list[str]]
    suspended_s: dict[str, float]
    exit_status: dict[str, int | None]


def parse_sacct(text: str) -> SacctAnswer:
    """`sacct -D -X -P -o JobID,State,Submit,Suspended,ExitCode` output.

    A requeued job has one line per attempt; pending array tasks share one line (`12_[3-5,8%2]`).
    """
    rows: dict[str, list[tuple[str, str, str, str]]] = {}
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) < 2 or not fields[0]:
            continue
        submit, suspended, exit_code = (fields[i] if len(fields) > i else "" for i in (2, 3, 4))
        for task in _expand_tasks(fields[0]):
            rows.setdefault(task, []).append((submit, fields[1].strip(), suspended, exit_code))
    ordered = {task: sorted(r, key=lambda r: r[0]) for task, r in rows.items()}
    return SacctAnswer(
        {task: [row[1] for row in r] for task, r in ordered.items()},
        {task: 60 * (slurm_minutes(r[-1][2]) or 0.0) for task, r in ordered.items()},
        {task: _exit_status(r[-1][3]) for task, r in ordered.items()},
    )


def _exit_status(exit_code: str) -> int | None:
    """sacct's ExitCode `73:0` (the status, then the signal that ended it) as its status, 73."""
    status = exit_code.partition(":")[0].strip()
    return int(status) if status.isdigit() else None


def _expand_tasks(job_id: str) -> list[str]:
    base, bracket, tasks = job_id.partition("_[")
    if not bracket:
        return [job_id]
    out = []
    for part in tasks.rstrip("]").split("%")[0].split(","):
        low, _, high = part.partition("-")
        if low.isdigit() and (high or low).isdigit():
            out += [f"{base}_{i}" for i in range(int(low), int(high or low) + 1)]
    return out


# sinfo's partitions, one line per group of alike nodes: (partition, gres, time limit).
SinfoLines = list[tuple[str, str, str]]


def config_problems(partitions: dict[str, PartitionConfig]) -> list[str]:
    """What Slurm would refuse or never start in the configured partitions, as config problems, all
    of them, from one sinfo call (with slurmctld down each call waits out its timeout, and a start
    that asked for each check would wait for minutes before refusing), and one more each for an
    exclude's nodes or a reservation where one is set. [] when sinfo cannot tell."""
    text = query(["sinfo", "-h", "-a", "-o", "%R|%G|%l|%c|%m|%f"], timeout=60) or ""
    lines = parse_sinfo(text)
    for warning in gpu_type_mismatches(partitions, lines):
        log.warning("%s", warning)
    if not text:
        return []
    return [
        *unknown_partitions(partitions, lines),  # (the checks below pass over a partition sinfo lacks)
        *unknown_gres(partitions, lines),
        *over_time_limit(partitions, lines),
        *over_node_size(partitions, node_sizes(text)),
        *unknown_features(partitions, text),
        *unknown_excluded_nodes(partitions),
        *unknown_reservations(partitions),
    ]


def parse_sinfo(text: str) -> SinfoLines:
    """`sinfo -o %R|%G|%l[|...]` output as (partition, gres, time limit) lines."""
    rows = (line.strip().split("|") for line in text.splitlines())
    return [(row[0], row[1], row[2]) for row in rows if len(row) >= 3]


def node_sizes(text: str) -> dict[str, tuple[int, int]]:
    """By partition, the most CPUs and the most memory (MB) a node of it has, from `sinfo -o
    %R|%G|%l|%c|%m[|%f]` (one line per group of alike nodes). A partition with a figure sinfo does
    not give exactly (`64+`, nodes that differ) is left out: nothing can be said of it."""
    sizes: dict[str, tuple[int, int]] = {}
    vague: set[str] = set()
    for line in text.splitlines():
        row = line.strip().split("|")[:5]
        if len(row) != 5:
            continue
        if not all(v.isdigit() for v in row[3:]):
            vague.add(row[0])
            continue
        cpus, mem = (int(v) for v in row[3:])
        had = sizes.get(row[0], (0, 0))
        sizes[row[0]] = (max(had[0], cpus), max(had[1], mem))
    return {p: size for p, size in sizes.items() if p not in vague}


def over_node_size(partitions: dict[str, PartitionConfig], sizes: dict[str, tuple[int, int]]) -> list[str]:
    """The configured `cpus_per_task` and `mem_gb` that no node of their partition has, as config
    problems: Slurm holds every such job pending for ever (PartitionConfig), or sbatch refuses it
    (Requested node configuration is not available), a lost run. Nothing is said where sinfo
    cannot tell."""
    problems = []
    for name, part in partitions.items():
        where = (part.partition or name).split(",")
        if not all(p in sizes for p in where):
            continue
        cpus, mem_mb = (max(sizes[p][i] for p in where) for i in (0, 1))
        shown = ",".join(where)
        if cpus and part.cpus_per_task > cpus:
            problems.append(
                f"cluster.partitions.{name}.cpus_per_task={part.cpus_per_task}: no node of partition {shown} "
                f"has that many CPUs (sinfo: {cpus} at most): set it to {cpus} at most"
            )
        if mem_mb and part.mem_gb * 1024 > mem_mb:
            problems.append(
                f"cluster.partitions.{name}.mem_gb={part.mem_gb:g}: no node of partition {shown} has that "
                f"much memory (sinfo: {mem_mb} MB at most): set it to {mem_mb // 1024} at most"
            )
    return problems


def unknown_features(partitions: dict[str, PartitionConfig], text: str) -> list[str]:
    """The configured `constraint`s no node of their partition meets, as config problems: sbatch
    refuses every such job (Invalid feature specification), each refusal a lost run. Judged only
    where it is sure, from `sinfo -o ...|%f`: names joined by `&` must all be on one node; with an
    `|` or brackets, one of the names must be on some node. A `!` or other syntax is not judged."""
    features: dict[str, list[set[str]]] = {}  # partition -> each group of alike nodes' features
    for row in (line.strip().split("|") for line in text.splitlines()):
        if len(row) == 6:
            features.setdefault(row[0], []).append(set(row[5].split(",")) - {"(null)", ""})
    problems = []
    for name, part in partitions.items():
        where = (part.partition or name).split(",")
        names = re.split(r"\*\d+|[&|()\[\]]", part.constraint)
        if not part.constraint or not all(p in features for p in where):
            continue  # (a partition sinfo lacks is unknown_partitions' to name)
        if not all(re.fullmatch(r"[\w.:=+-]*", n) for n in names):
            continue  # (a `!`, or syntax this does not read)
        named, nodes = {n for n in names if n}, [f for p in where for f in features[p]]
        either = re.search(r"[|\[]", part.constraint)
        if any(named <= f for f in nodes) or (either and any(named & f for f in nodes)):
            continue
        on_none = sorted(n for n in named if not any(n in f for f in nodes))
        said = f"no node has {', '.join(on_none)}" if on_none else "no node has them all"
        have = ", ".join(sorted(set().union(*nodes)))
        problems.append(
            f"cluster.partitions.{name}.constraint={part.constraint}: in partition {','.join(where)}, {said} "
            f"(sinfo lists {f'the features {have}' if have else 'no features'}); sbatch would refuse every job"
        )
    return problems


def sbatch_settings(name: str, part: PartitionConfig, option: str) -> list[tuple[str, str]]:
    """Where the partition gives sbatch `option`, as (setting, value): its own field, if it has
    one, and its `extra_sbatch` entry (submitit writes `_` as `-`)."""
    settings = [(f"cluster.partitions.{name}.{option}", getattr(part, option, ""))]
    settings += [
        (f"cluster.partitions.{name}.extra_sbatch.{key}", value)
        for key, value in part.extra_sbatch.items()
        if str(key).replace("_", "-") == option
    ]
    return [(where, str(value)) for where, value in settings if value not in ("", None)]


def unknown_excluded_nodes(partitions: dict[str, PartitionConfig]) -> list[str]:
    """The nodes an `exclude` names that Slurm does not have, as config problems: sbatch refuses
    every such job (Invalid node name specified), each refusal a lost run. One sinfo call, made
    only where an exclude is set; said in a warning, not judged, where sinfo cannot tell."""
    excludes = [s for name, part in partitions.items() for s in sbatch_settings(name, part, "exclude")]
    if not excludes:
        return []
    listed = query(["sinfo", "-h", "-a", "-N", "-o", "%N"], timeout=60)
    if not listed:
        log.warning("%s: the nodes it names could not be checked (sinfo lists no nodes)", excludes[0][0])
        return []
    have = set(listed.split())
    problems = []
    for where, value in excludes:
        if missing := [node for node in hostnames(value) if node not in have]:
            problems.append(
                f"{where}={value}: Slurm has no node {', '.join(missing)} (sinfo lists {_some(have)}); "
                "sbatch would refuse every job"
            )
    return problems


def unknown_reservations(partitions: dict[str, PartitionConfig]) -> list[str]:
    """The `reservation`s Slurm does not have, as config problems: sbatch refuses every such job
    (Requested reservation is invalid), each refusal a lost run. One scontrol call, made only
    where a reservation is set; said in a warning, not judged, where scontrol cannot tell."""
    wanted = [s for name, part in partitions.items() for s in sbatch_settings(name, part, "reservation")]
    if not wanted:
        return []
    listed = query(["scontrol", "-o", "show", "reservation"])
    if listed is None:
        log.warning("%s: the reservation could not be checked (scontrol failed)", wanted[0][0])
        return []
    have = set(re.findall(r"ReservationName=(\S+)", listed))
    return [
        f"{where}={value}: Slurm has no such reservation (scontrol lists {_some(have) if have else 'none'}); "
        "sbatch would refuse every job"
        for where, value in wanted
        if not set(value.split(",")) <= have
    ]


HOSTLIST_MOST = 65536  # names one bracketed host list may expand to: more than any cluster has


def hostnames(hostlist: str) -> list[str]:
    """The node names a Slurm host list names (`a,gpu[01-03,7]`); a name with a range this does
    not read, one reversed (`n[5-1]`, read as no node at all, so none missing), or one of more
    than HOSTLIST_MOST names (a typo's `n[1-999999999]` built a billion names at the start), is
    taken as written."""
    names = []
    for item in re.findall(r"(?:[^,\[]|\[[^\]]*\])+", hostlist):
        found = re.fullmatch(r"([^\[]*)\[(\d+(?:-\d+)?(?:,\d+(?:-\d+)?)*)\](.*)", item)
        spans = [part.partition("-") for part in found.group(2).split(",")] if found else []
        sizes = [int(high or low) - int(low) + 1 for low, _, high in spans]
        if not found or min(sizes) < 1 or sum(sizes) > HOSTLIST_MOST:
            names.append(item)
            continue
        prefix, _, suffix = found.groups()
        for low, _, high in spans:
            names += [f"{prefix}{i:0{len(low)}d}{suffix}" for i in range(int(low), int(high or low) + 1)]
    return names


def _some(names: set[str], shown: int = 8) -> str:
    """Up to `shown` of `names`, and how many there are in all: a one-line error on a cluster of
    thousands of nodes."""
    listed = sorted(names)
    more = f", ... ({len(listed)} in all)" if len(listed) > shown else ""
    return ", ".join(listed[:shown]) + more


def unknown_partitions(partitions: dict[str, PartitionConfig], lines: SinfoLines) -> list[str]:
    """The configured partitions Slurm does not have, as config problems: sbatch would refuse every
    job, and each refusal would be re-queued as a lost run. [] when sinfo lists none."""
    have = {partition for partition, _, _ in lines}
    if not have:
        return []
    return [
        f"cluster.partitions.{name}.partition={wanted}: Slurm has no such partition "
        f"(sinfo lists {', '.join(sorted(have))})"
        for name, part in partitions.items()
        for wanted in (part.partition or name).split(",")
        if wanted not in have
    ]


def unknown_gres(partitions: dict[str, PartitionConfig], lines: SinfoLines) -> list[str]:
    """The configured GPU requests (`gres`) that no node of their partition has, as config problems:
    sbatch would refuse every job (each refusal re-queued as a lost run) or Slurm hold it pending
    for ever."""
    offered: dict[str, list[str]] = {}  # partition -> its nodes' gres, as sinfo writes them
    for partition, gres, _ in lines:
        offered.setdefault(partition, []).extend(_gres_items(gres))
    problems = []
    for name, part in partitions.items():
        where = (part.partition or name).split(",")
        if not part.gres or not all(p in offered for p in where):
            continue  # (a partition sinfo lacks is unknown_partitions' to name)
        have = [item for p in where for item in offered[p]]
        kinds = {kind for item in have for kind in _gres_kinds(item)}
        if missing := [w for w in _gres_items(part.gres) if _gres_kinds(w)[-1] not in kinds]:
            problems.append(
                f"cluster.partitions.{name}.gres={part.gres}: no node of partition {','.join(where)} has "
                f"{', '.join(missing)} (sinfo lists {', '.join(sorted(set(have))) or 'no gres'})"
            )
    return problems


def gpu_type_mismatches(partitions: dict[str, PartitionConfig], lines: SinfoLines) -> list[str]:
    """The partitions whose `gpu_type` names another GPU than Slurm gives their jobs (the type
    their gres asks for; for an untyped request, each type sinfo lists on their nodes), as
    warnings. The jobs run all the same: MFU is reckoned from the GPU a job sees (prepare.py) and
    the price is the partition's. But the label is what results.tsv, W&B, report.html and the
    hardware a resume holds each tier to (hardware.py) say, so it is best put right before the
    first experiment. Nothing is said of a label or type that names no model (`nvidia`)."""
    listed: dict[str, set[str]] = {}  # partition -> the GPU types of its nodes
    for partition, gres, _ in lines:
        listed.setdefault(partition, set()).update(_gpu_types(_gres_items(gres)))
    warnings = []
    for name, part in partitions.items():
        where = (part.partition or name).split(",")
        asked = [item for item in _gres_items(part.gres) if _gres_kinds(item)[0] == "gpu"]
        if not (asked or part.gpus_per_node):
            continue  # (no GPU asked for)
        typed = _gpu_types(asked)
        given = typed or {t for p in where for t in listed.get(p, ())}
        models, label = set().union(*map(_gpu_models, given)), _gpu_models(part.gpu_type)
        if not models or label & models or not (label or part.gpu_type == "cpu"):
            continue
        shown = ", ".join(sorted(given))
        source = f"gres={part.gres}" if typed else f"sinfo lists {shown} on partition {','.join(where)}"
        fix = (
            f"set gpu_type: {shown}"
            if len(given) == 1
            else "ask for one type in gres and name it in gpu_type"
        )
        warnings.append(
            f"cluster.partitions.{name}.gpu_type={part.gpu_type}, but Slurm gives its jobs {shown} GPUs "
            f"({source}): results, the report and the hardware a resume holds its tier to would say "
            f"{part.gpu_type}; {fix}"
        )
    return warnings


def _gpu_types(items: list[str]) -> set[str]:
    """The GPU types gres items name (`gpu:h100:8` names h100; `gpu:8` none)."""
    return {kinds[-1].split(":", 1)[1] for kinds in map(_gres_kinds, items) if kinds[-1].startswith("gpu:")}


def _gpu_models(label: str) -> set[str]:
    """The GPU models a label names, letters then digits (`NVIDIA H100 80GB HBM3` names h100 and
    hbm3, `a100_80g` a100), so a label and a GRES type written otherwise still agree."""
    return set(re.findall(r"[a-z]+\d+", label.lower()))


def over_time_limit(partitions: dict[str, PartitionConfig], lines: SinfoLines) -> list[str]:
    """The configured time limits (`time_limit_min`) above their partition's, as config problems:
    Slurm holds such a job pending for ever (PartitionTimeLimit) or, where the site enforces
    partition limits at submission (EnforcePartLimits), sbatch refuses every one (each refusal
    re-queued as a lost run)."""
    limits = {partition: limit for partition, _, limit in lines}  # as sinfo writes them
    problems = []
    for name, part in partitions.items():
        where = (part.partition or name).split(",")
        allowed = [slurm_minutes(limits.get(p, "")) for p in where]
        if None in allowed:
            continue  # (no limit, or a partition sinfo lacks: unknown_partitions names it)
        if part.time_limit_min > max(allowed):  # (a job fits where any of its partitions takes it)
            shown = ", ".join(f"{p} {limits[p]}" for p in where)
            problems.append(
                f"cluster.partitions.{name}.time_limit_min={part.time_limit_min}: above the time limit of "
                f"partition {shown} (sinfo): set it to {int(max(allowed))} at most"
            )
    return problems


def slurm_minutes(limit: str) -> float | None:
    """A Slurm time limit as sinfo writes it (`30:00`, `1:30:00`, `2-00:00:00`, `infinite`) in
    minutes; None for no limit or text it cannot read."""
    days, _, clock = limit.strip().rpartition("-")
    parts = clock.split(":")
    if not (days or "0").isdigit() or not all(p.isdigit() for p in parts) or len(parts) > 3:
        return None
    numbers = [int(p) for p in parts]
    if len(numbers) == 1:  # minutes alone
        numbers = [numbers[0], 0]
    hours, minutes, seconds = [0] * (3 - len(numbers)) + numbers  # (M:S or H:M:S)
    return int(days or 0) * 1440 + hours * 60 + minutes + seconds / 60


def _gres_items(gres: str) -> list[str]:
    """`gpu:h100:8(S:0-1),nvme:1` as its items (`gpu:h100:8`, `nvme:1`); [] for `(null)`."""
    return [item for item in re.sub(r"\([^)]*\)", "", gres).split(",") if item.strip()]


def _gres_kinds(item: str) -> list[str]:
    """What a gres item offers or asks for, without its count: `gpu:h100:8` is `gpu` and
    `gpu:h100` (a typed GPU serves an untyped request too); the last is the most specific."""
    name, *rest = item.strip().split(":")
    if rest and rest[-1].isdigit():
        rest = rest[:-1]
    return [name] + ([f"{name}:{rest[0]}"] if rest else [])


def is_active(state: str) -> bool:
    return (state.split() or [""])[0] in ACTIVE_STATES


def latest(attempts: list[str]) -> str:
    return attempts[-1] if attempts else ""


def max_array_size(settings: dict[str, str]) -> int:
    """The most tasks one job array may have (the cluster's MaxArraySize: sbatch refuses a larger
    array); Slurm's default, 1001, when `scontrol` cannot tell."""
    value = settings.get("MaxArraySize", "")
    return int(value) if value.isdigit() and int(value) > 0 else DEFAULT_MAX_ARRAY_SIZE


def cluster_settings() -> dict[str, str]:
    """The running cluster's settings (`scontrol show config`), by name; {} when scontrol cannot
    tell. Read once per start and handed to whatever needs a line of it (the MaxWall check, the
    array size): each reading is the whole config, and waits out a timeout while slurmctld is down."""
    settings = {}
    for line in (query(["scontrol", "show", "config"]) or "").splitlines():
        key, equals, value = line.partition("=")
        if equals:
            settings[key.strip()] = value.strip()
    return settings


def pending_reasons(job_ids: set[str]) -> dict[str, set[str]] | None:
    """Why Slurm holds each of these jobs pending (squeue's reasons, by job id; an array's by task,
    `A_i`); {} for no job, None when squeue cannot tell. By task, as a hold is: a hold on one task
    of a pending array is that task's reason alone, where squeue's line for the array (without
    -r) adds it to the reason of all its tasks (`None,JobHeldAdmin`) and names none."""
    if not job_ids:
        return {}
    out = query(["squeue", "-h", "-r", "-t", "PENDING", "-o", "%i|%r", "-j", ",".join(sorted(job_ids))])
    return None if out is None else parse_pending_reasons(out)


def parse_pending_reasons(out: str) -> dict[str, set[str]]:
    """squeue's `%F|%r` lines as each job's reasons. A list of them joins names with a bare comma
    (`None,JobHeldAdmin`); a reason's own text has commas too (`Nodes required for job are DOWN,
    DRAINED or ...`, `UnavailableNodes:n[01,03-05]`), followed by a space or a digit, not a name."""
    reasons: dict[str, set[str]] = {}
    for line in out.splitlines():
        job, sep, listed = line.partition("|")
        if sep:
            reasons.setdefault(job, set()).update(re.split(r",(?=[A-Za-z])", listed))
    return reasons


def job_states(job_ids: set[str], if_failed: str = "") -> SacctAnswer | None:
    """`sacct`'s states of every attempt of every task of the given jobs, and their suspended time;
    None when sacct fails (said in a warning when `if_failed` says what the caller does instead)."""
    if not job_ids:
        return SacctAnswer({}, {}, {})
    fields = "JobID,State,Submit,Suspended,ExitCode"
    cmd = ["sacct", "-n", "-P", "-X", "-D", "-o", fields, "-j", ",".join(sorted(job_ids))]
    out = query(cmd, if_failed=if_failed)
    return None if out is None else parse_sacct(out)


def dropped_tasks(
    unlisted: set[str], queued: dict[str, list[str]], recorded: dict[str, list[str]]
) -> set[str]:
    """The array tasks among `unlisted` (those squeue lacks, and sacct lacks or shows pending) that
    were taken out of their array on their own, a pending task scancelled alone: Slurm 22.05 keeps
    no record of one. Told by another task of its array that squeue still has (`queued`), or that
    sacct has a record of while it has none of this one (`recorded`): sacct's record of an array's
    pending tasks moves on to those left, and a task that starts gets a record of its own."""
    squeued = {i.split("_")[0] for i in queued}
    in_sacct = {i.split("_")[0] for i in recorded}
    return {
        i
        for i in unlisted
        if "_" in i and (i.split("_")[0] in squeued or (i.split("_")[0] in in_sacct and i not in recorded))
    }


def queue_states(job_ids: set[str]) -> dict[str, list[str]] | None:
    """slurmctld's own word on the given jobs (squeue), for when sacct cannot answer: the same
    shape as `job_states`' states, each restart a RESTARTED attempt before the current one. A job ended
    longer ago than the cluster's MinJobAge is absent; None when squeue fails (slurmctld down)."""
    if not job_ids:
        return {}
    fields = "JobArrayID:|,State:|,RestartCnt:"  # a ':' suffix with no width: unpadded, '|'-separated
    cmd = ["squeue", "-h", "-r", "-t", "all", "-O", fields, "-j", ",".join(sorted(job_ids))]
    # Asked about one job it no longer holds, squeue fails; asked about several, it lists the rest.
    out = query(cmd, none_found="Invalid job id")
    return None if out is None else parse_squeue(out)


def queue_exit_status(job_id: str) -> int | None:
    """slurmctld's word on a job's latest exit status (`scontrol show job`'s ExitCode), for when
    sacct cannot answer: it holds a job for MinJobAge after its end. None when it no longer
    holds the job, or cannot be asked."""
    out = query(["scontrol", "-o", "show", "job", job_id]) or ""
    found = re.search(r"(?:^|\s)ExitCode=(\S+)", out.partition("\n")[0])
    return _exit_status(found.group(1)) if found else None


def queue_suspended_s(job_ids: set[str], now: float) -> dict[str, float]:
    """How long each running (or suspended) job of these has stood suspended in all, in seconds,
    by slurmctld's word (squeue) for when sacct cannot count it: its start to `now` less the time
    it ran (TimeUsed stops while it is suspended). {} when squeue cannot tell."""
    if not job_ids:
        return {}
    fields = "JobArrayID:|,StartTime:|,TimeUsed:"
    cmd = ["squeue", "-h", "-r", "-t", "RUNNING,SUSPENDED", "-O", fields, "-j", ",".join(sorted(job_ids))]
    return parse_squeue_suspended(query(cmd, none_found="Invalid job id") or "", now)


def parse_squeue_suspended(text: str, now: float) -> dict[str, float]:
    """`queue_suspended_s`'s squeue lines (`12_3|2026-12-06T13:05:06|0:05`) as suspended seconds,
    for the jobs that stood suspended (a second or two is the clocks' rounding, not a suspension)."""
    counted: dict[str, float] = {}
    for line in text.splitlines():
        task, start, used = ([*line.strip().split("|"), "", ""])[:3]
        ran_min = slurm_minutes(used)
        try:
            started = datetime.fromisoformat(start.strip()).timestamp()
        except ValueError:
            continue
        if task and ran_min is not None and (suspended := now - started - 60 * ran_min) > 2:
            counted[task] = suspended
    return counted


def parse_squeue(text: str) -> dict[str, list[str]]:
    """`queue_states`'s squeue lines (`12_3|RUNNING|1`) as `parse_sacct`'s attempts, oldest first."""
    rows: dict[str, list[str]] = {}
    for line in text.splitlines():
        task, _, rest = line.strip().partition("|")
        state, _, restarts = rest.partition("|")
        restarts = restarts.strip()
        if task and state:
            rows[task] = [RESTARTED] * (int(restarts) if restarts.isdigit() else 0) + [state.strip()]
    return rows


def query(cmd: list[str], timeout: float = 30, if_failed: str = "", none_found: str = "") -> str | None:
    """A Slurm query's output; None when the command is missing, fails or hangs (said in a
    warning, with what the controller does instead, when `if_failed` says it). A failure whose
    message contains `none_found` is an answer: nothing matched ('')."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True).stdout
    except (OSError, subprocess.SubprocessError) as err:
        if none_found and none_found in (getattr(err, "stderr", None) or ""):
            return ""
        if if_failed:
            said = err.stderr.strip().splitlines() if isinstance(err, subprocess.CalledProcessError) else []
            log.warning("%s failed (%s); %s", cmd[0], said[-1] if said else err, if_failed)
        return None
