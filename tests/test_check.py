"""`autoresearch check`: the start's checks and the plan, with nothing written or launched."""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from conftest import tmpfs_at
from engine_helpers import (
    FIXTURE_CONF,
    FREEZER,
    REPO,
    campaign_command,
    compose_config,
    compose_toy,
    fake_commands,
    freezer_cgroup,
    load,
    lucky_seeds_study,
    run_campaign,
    state_of,
    wait_for,
)
from optuna.storages.journal._file import LOCK_FILE_SUFFIX
from optuna.trial import TrialState, create_trial

from autoresearch import dry_run
from autoresearch.agent.fakeapi import ScriptedAPI, overloaded, served
from autoresearch.config import time_budget_seconds
from autoresearch.dry_run import NOTHING_SPENT, _folder_said, _load_lines
from autoresearch.estimate import CpuLoad, Pace, campaign_rate, tier_paces
from autoresearch.fleet.factory import plan_fleet
from autoresearch.fleet.slurm import slurm_pool
from autoresearch.ledger import Ledger
from autoresearch.results import compare, frontier_value, rows

CONSOLE_SCRIPT = str(Path(sys.executable).with_name("autoresearch"))
PYTHON_M = [sys.executable, "-m", "autoresearch"]


def toy_args(runs_dir: Path, *overrides: str) -> list[str]:
    """The toy campaign's command line, as the tests' campaigns run it, after the command."""
    return campaign_command(runs_dir, *overrides)[len(PYTHON_M) :]


def run(
    command: list[str], *args: str, env: dict[str, str] | None = None, cwd: Path = REPO
) -> subprocess.CompletedProcess:
    """`command` with `args`, in `cwd` (the repository by default), in `env` (this process's
    environment by default)."""
    return subprocess.run(
        [*command, *args],
        cwd=cwd,
        env=os.environ if env is None else env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def check(runs_dir: Path, *overrides: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return run([*PYTHON_M, "check"], *toy_args(runs_dir, *overrides), env={**os.environ, **(env or {})})


def tree(folder: Path) -> dict[str, tuple[int, int]]:
    """Every path under `folder` with its size and modification time: what a write would change."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def plan(stdout: str) -> dict[str, str]:
    """The plan's `label  value` lines, by label."""
    return {m[1]: m[2] for m in re.finditer(r"^(\S+) +(.+)$", stdout, re.M)}


def _experiments_reached(launched: int, limit: int) -> str:
    """How a reached experiments budget is said, with the runs launched past it for decisions."""
    past = launched - limit
    owed = f": past {limit}, only the {past} run{'s' if past > 1 else ''} a decision waited for"
    return f"experiments budget reached ({launched} of {limit}{owed if past > 0 else ''})"


@pytest.mark.parametrize("command", [PYTHON_M, [CONSOLE_SCRIPT]], ids=["python -m", "console script"])
@pytest.mark.parametrize("storage", ["journal", "sqlite"])
def test_a_new_campaign_is_checked_and_planned_with_nothing_written(
    tmp_path: Path, command: list[str], storage: str
) -> None:
    runs = tmp_path / "runs"
    database = tmp_path / "db" / "study.db"
    slots, seconds, price, experiments, gpu_hours = 3, 20, 1.5, 12, 2
    overrides = [
        f"cluster.cpu_slots={slots}",
        f"campaign.time_budget={seconds}",
        f"cluster.partitions.local.price_per_gpu_hour={price}",
        f"campaign.budget.max_experiments={experiments}",
        f"campaign.budget.max_gpu_hours={gpu_hours}",
        *([f"storage=sqlite:///{database}"] if storage == "sqlite" else []),
    ]
    if storage == "sqlite":
        database.parent.mkdir()
    before = tree(tmp_path)
    proc = run([*command, "check"], *toy_args(runs, *overrides))
    assert proc.returncode == 0, proc.stderr
    assert tree(tmp_path) == before  # no folder, journal, database file, log or lock
    said = plan(proc.stdout)
    assert said["campaign"] == f"new: {runs / 'toy'} does not exist yet (the start makes it)"
    assert said["storage"].endswith("(no study yet: the start makes it)")
    per_hour = slots * 3600 / seconds
    assert said["screen"].startswith(
        f"partition local: {slots} x cpu, {seconds} s of training per experiment"
    )
    deadline = 2 * seconds + 20  # campaign_command's cluster.grace_seconds
    assert f"deadline {deadline} s" in said["screen"]
    assert said["screen"].endswith(
        f"up to {per_hour:.1f} experiments/h (each slot held for the training time only), "
        f"${slots * price:.2f}/h"
    )
    assert said["estimate"] == (
        f"up to {per_hour:.1f} experiments/h, {slots} CPU-hours/h, ${slots * price:.2f}/h "
        "(from the config: the training time alone, which start-up and evaluation add to)"
    )
    assert "every slot busy" in said["assumes"]
    minutes_to_experiments = experiments / per_hour * 60
    minutes_to_gpu_hours = gpu_hours / slots * 60
    assert said["budgets"] == (
        f"max_experiments: {experiments} left, reached in about {minutes_to_experiments:.0f} min; "
        f"max_gpu_hours: {gpu_hours} left, reached in about {minutes_to_gpu_hours:.0f} min; "
        "max_experiments binds first"
    )


def test_a_resume_is_planned_with_its_counts_and_changed_settings_and_nothing_written(tmp_path: Path) -> None:
    started = run_campaign(tmp_path, "campaign.budget.max_experiments=5")
    assert started.returncode == 0, started.stderr
    campaign = tmp_path / "toy"
    study = load(campaign)
    before = tree(tmp_path)
    trials_before = len(study.trials)
    proc = check(tmp_path, "campaign.budget.max_experiments=9")
    assert proc.returncode == 0, proc.stderr
    assert tree(tmp_path) == before
    assert len(load(campaign).trials) == trials_before
    said = plan(proc.stdout)
    table = rows(study)
    ran = sum(1 for r in table if r["status"] != "skip")
    running = sum(1 for t in study.trials if t.state == TrialState.RUNNING)
    assert said["campaign"].startswith(f"resumes {campaign}: {ran} finished (")
    assert f", {running} running, " in said["campaign"]
    compared = compare(table)
    assert compared is not None and said["campaign"].endswith(f" queued; {compared.said()}")
    assert said["changes"] == "campaign.budget.max_experiments: 5 -> 9"
    assert said["storage"].endswith("(holds the study)")
    launched = sum(1 for t in study.trials if "exp_dir" in t.user_attrs)
    assert said["budgets"].startswith(f"max_experiments: {9 - launched} left")
    assert said["controller"].startswith("stopped")
    # the spent budget, unchanged: a resume would stop at once, and the check says so
    spent = plan(check(tmp_path, "campaign.budget.max_experiments=5").stdout)
    assert spent["budgets"].startswith(_experiments_reached(launched, 5))
    assert tree(tmp_path) == before


def test_a_resume_check_compares_the_baseline_and_frontier_on_the_seeds_both_ran(tmp_path: Path) -> None:
    """The campaign line said the plain means, 'frontier val_bpb 1.982500 (baseline 1.990000)',
    the baseline's over seeds 42-45 and the frontier's over 43-45 and 1042, so a seed's luck hid
    most of the -0.03 the change was kept for; it says them as the closing line does."""
    said = _folder_said(tmp_path, lucky_seeds_study(tmp_path))
    assert said.endswith(" 0 queued; val_bpb 2.000000 -> 1.970000 (means over the same 3 seeds)")


@pytest.mark.parametrize(
    ("overrides", "env"),
    [
        (["campaign.baseline_seeds=0"], {}),
        (["campaign.wave_size=20"], {}),
        (["agent=claude"], {"ANTHROPIC_API_KEY": ""}),
        (["agent=claude"], {"ANTHROPIC_API_KEY": "sk-ant-api03-secret pasted with a space"}),
        ([f"campaign.name={'n' * 256}"], {}),  # its checks once read the folder: a traceback, exit 1
    ],
    ids=[
        "bad config",
        "a wave above its cap",
        "no key",
        "a key no header can hold",
        "a name no folder can have",
    ],
)
def test_a_start_that_would_be_refused_is_refused_in_the_same_line(
    tmp_path: Path, overrides: list[str], env: dict[str, str]
) -> None:
    checked = check(tmp_path, *overrides, env=env)
    assert checked.returncode == 2
    (line,) = checked.stderr.splitlines()
    assert line.startswith("error: ") and checked.stdout == ""
    assert list(tmp_path.iterdir()) == []
    started = run(PYTHON_M, *toy_args(tmp_path, *overrides), env={**os.environ, **env})
    assert started.returncode == 2 and started.stderr.splitlines() == [line]
    if key := env.get("ANTHROPIC_API_KEY"):
        assert key not in checked.stdout + checked.stderr and "secret" not in line


@pytest.mark.parametrize("taken_by_a_file", ["runs_dir", "the campaign folder", "its controller.log"])
def test_a_folder_the_start_cannot_make_or_write_is_refused_in_the_start_line(
    tmp_path: Path, taken_by_a_file: str
) -> None:
    """A file where the start makes a folder, or a folder where it appends its log: the check read
    on into the folder (a NotADirectoryError traceback, exit 1) or said "would start"."""
    runs = tmp_path / "runs"
    blocked = {
        "runs_dir": runs,
        "the campaign folder": runs / "toy",
        "its controller.log": runs / "toy" / "controller.log",
    }[taken_by_a_file]
    blocked.parent.mkdir(parents=True, exist_ok=True)
    blocked.mkdir() if taken_by_a_file == "its controller.log" else blocked.write_text("")
    before = tree(tmp_path)
    checked = check(runs)
    assert checked.returncode == 2 and checked.stdout == "", checked.stderr
    (line,) = checked.stderr.splitlines()
    assert line.startswith(f"error: cannot write the campaign folder {runs / 'toy'}: ")
    assert tree(tmp_path) == before
    started = run(PYTHON_M, *toy_args(runs))
    assert started.returncode == 2 and started.stderr.splitlines() == [line]


def test_a_runs_dir_no_path_can_reach_is_refused_in_the_start_line(tmp_path: Path) -> None:
    """A runs_dir with a part longer than a file name may be: the checks that look for the campaign's
    config.yaml and frontier met the file system's refusal, an OSError traceback, exit 1."""
    runs = tmp_path / ("r" * 300)
    checked = check(runs)
    assert checked.returncode == 2 and checked.stdout == "", checked.stderr
    (line,) = checked.stderr.splitlines()
    assert (
        line
        == f"error: cannot write the campaign folder {runs / 'toy'}: File name too long; set runs_dir=... to a folder you can write"
    )
    started = run(PYTHON_M, *toy_args(runs))
    assert started.returncode == 2 and started.stderr.splitlines() == [line]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("read_only", ["runs_dir's file system", "a campaign folder's file system"])
def test_a_folder_on_a_read_only_file_system_is_refused_in_the_start_line(
    tmp_path: Path, read_only: str
) -> None:
    """runs_dir on a file system mounted read-only (a tmpfs here): the check said "Permission
    denied" where the start says "Read-only file system"; the check gives the start's line."""
    with tmpfs_at(tmp_path / "mount") as mount:
        runs = mount / "runs"
        if read_only == "a campaign folder's file system":  # a campaign copied there, resumed
            (runs / "toy").mkdir(parents=True)
            (runs / "toy" / "controller.log").write_text("")
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        checked = check(runs)
        started = run(PYTHON_M, *toy_args(runs))
    assert checked.returncode == 2 and checked.stdout == "", checked.stderr
    (line,) = checked.stderr.splitlines()
    assert line.startswith(f"error: cannot write the campaign folder {runs / 'toy'}: Read-only file system (")
    assert started.returncode == 2 and started.stderr.splitlines() == [line]


def test_a_sqlite_file_in_a_folder_that_is_not_there_is_refused_in_the_start_line(tmp_path: Path) -> None:
    """SQLite makes its file, never the file's folder: the check saw no study there and said
    "would start", where the start then stopped on "unable to open database file"."""
    storage = f"storage=sqlite:///{tmp_path / 'no-such-folder' / 'study.db'}"
    checked = check(tmp_path / "runs", storage)
    assert checked.returncode == 2 and checked.stdout == "", checked.stdout
    assert list(tmp_path.iterdir()) == []
    started = run(PYTHON_M, *toy_args(tmp_path / "runs", storage))
    assert checked.stderr.splitlines() == [f"error: {start_refusal(started)}"]


@pytest.mark.parametrize(
    "database", ["server not listening", "sqlite folder not there", "sqlite file a folder"]
)
def test_a_first_start_whose_database_cannot_be_reached_leaves_nothing(tmp_path: Path, database: str) -> None:
    """The start made the campaign folder (its log, lock, heartbeat and subfolders) before it tried
    the database, so a failed first start left a folder whose heartbeat said it had stopped on an
    error, which the check of the corrected command then reported as the campaign's last stop.
    It now reaches the database before it makes anything, as the check does, in the check's line;
    at once, whatever storage_retry_seconds: before a campaign ran, a server that does not answer
    is more often a wrong URL than an outage."""
    url = {
        "server not listening": "postgresql://nobody@127.0.0.1:1/db",  # (port 1: refused at once)
        "sqlite folder not there": f"sqlite:///{tmp_path / 'no-such-folder' / 'study.db'}",
        "sqlite file a folder": f"sqlite:///{tmp_path / 'study.db'}",  # (made below)
    }[database]
    if database == "sqlite file a folder":
        (tmp_path / "study.db").mkdir()
    runs = tmp_path / "runs"
    checked = check(runs, f"storage={url}", "storage_retry_seconds=5")
    assert checked.returncode == 2 and checked.stdout == "", checked.stdout
    (line,) = checked.stderr.splitlines()
    assert line.startswith(f"error: cannot open the study at storage={url}: ")
    started = run(PYTHON_M, *toy_args(runs, f"storage={url}", "storage_retry_seconds=5"))
    assert started.returncode == 2 and started.stderr.splitlines() == [line], started.stdout
    assert [p.name for p in tmp_path.iterdir()] == (
        ["study.db"] if database == "sqlite file a folder" else []
    )
    corrected = check(runs)
    assert corrected.returncode == 0, corrected.stderr
    assert "controller" not in plan(corrected.stdout)


@pytest.mark.parametrize("models_listed", [True, False], ids=["models listed", "models endpoint overloaded"])
def test_the_plan_says_whether_the_claude_model_was_checked(tmp_path: Path, models_listed: bool) -> None:
    """The start goes on where the API's list of models cannot be read, with a warning; the plan
    said "the model offered to it" all the same."""
    api = ScriptedAPI(models=["claude-test-1"] if models_listed else overloaded())
    with served(api) as url:
        overrides = [
            "agent=claude",
            "agent.model=claude-test-1",
            f"agent.base_url={url}",
            "agent.max_retries=0",
        ]
        checked = check(tmp_path, *overrides, env={"ANTHROPIC_API_KEY": "sk-ant-test-key"})
    assert checked.returncode == 0, checked.stderr
    said = plan(checked.stdout)["proposer"]
    assert said.startswith("claude, model claude-test-1 (its key found, ")
    assert ("the model offered to it" in said) == models_listed, said
    assert ("could not list models" in checked.stdout) == (not models_listed), checked.stdout


def test_a_storage_holding_no_study_is_left_without_tables(tmp_path: Path) -> None:
    """An existing SQLite file without a study (a database made for the campaign, empty): the
    check reads it and creates neither Optuna's tables nor a study."""
    database = tmp_path / "study.db"
    sqlite3.connect(database).close()
    proc = check(tmp_path / "runs", f"storage=sqlite:///{database}")
    assert proc.returncode == 0, proc.stderr
    with sqlite3.connect(database) as db:
        assert db.execute("select name from sqlite_master").fetchall() == []
    assert not (tmp_path / "runs").exists()


def locked_sqlite_study(tmp_path: Path) -> tuple[str, sqlite3.Connection]:
    """A SQLite study of the toy campaign, and a connection of this process holding it locked in a
    write transaction, as another controller's write or a user's `sqlite3` shell would."""
    database = tmp_path / "study.db"
    optuna.create_study(study_name="toy", storage=f"sqlite:///{database}")
    locker = sqlite3.connect(database, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    return f"storage=sqlite:///{database}", locker


def test_a_check_beside_a_controller_holding_the_sqlite_study_waits_for_it_as_the_start_does(
    tmp_path: Path,
) -> None:
    """`check` read the study once and refused "database is locked" at once (the start too), where
    the controller waits storage_retry_seconds for a database that fails. It waits as long,
    saying so on stderr, and plans once the lock is given back."""
    storage, locker = locked_sqlite_study(tmp_path)
    checking = subprocess.Popen(
        [*PYTHON_M, "check", *toy_args(tmp_path / "runs", storage, "storage_retry_seconds=120")],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert checking.stderr is not None
    waiting = checking.stderr.readline()  # (said once its first read found the file locked)
    locker.close()
    out, err = checking.communicate(timeout=120)
    assert checking.returncode == 0, waiting + err
    assert "is locked by another process (database is locked): trying again for up to 120 s" in waiting
    assert "is back after" in err
    assert plan(out)["storage"].endswith("(holds the study)")
    assert "warning" not in plan(out)  # (the wait was said as it came, not as a warning of the plan)


def test_a_sqlite_study_locked_past_storage_retry_seconds_is_one_line_saying_it_is_busy(
    tmp_path: Path,
) -> None:
    storage, locker = locked_sqlite_study(tmp_path)
    with contextlib.closing(locker):
        checked = check(tmp_path / "runs", storage, "storage_retry_seconds=0")
    assert checked.returncode == 2 and checked.stdout == "", checked.stdout
    (line,) = checked.stderr.splitlines()
    assert line == (
        f"error: cannot open the study at {storage}: database is locked: another process holds the "
        "SQLite file locked (a controller's write, a sqlite3 shell's open transaction); run this "
        "again once it lets go, or raise storage_retry_seconds"
    )


def test_a_start_refused_after_the_fleet_checks_leaves_no_workers_queue(tmp_path: Path) -> None:
    """A workers partition's fleet makes its queue folders as it is built: built before the
    tracking key was checked, a refused start left runs/NAME/queue/ behind. Slurm's commands are
    stand-ins (sinfo and scontrol tell nothing, so no partition is checked against a cluster)."""
    bin_dir = fake_commands(
        tmp_path / "bin", sbatch="", srun="", sacct="", scancel="", squeue="", sinfo="", scontrol=""
    )
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_API_KEY", "WANDB_MODE")}
    env |= {"PATH": f"{bin_dir}:{env['PATH']}", "HOME": str(tmp_path)}  # (no ~/.netrc key either)
    runs = tmp_path / "runs"
    overrides = ["cluster=slurm", "cluster.partitions.h100.mode=workers", "tracking=wandb"]
    proc = run(PYTHON_M, *toy_args(runs, *overrides), env=env)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: W&B: no API key in WANDB_API_KEY or ~/.netrc")
    assert not runs.exists()


def test_the_gpt2_campaign_without_keys_is_refused_naming_how_to_run_it_without_them(tmp_path: Path) -> None:
    """Claude and W&B are the gpt2 campaign's defaults: a user with neither key is told in one line
    which setting runs it anyway, and nothing is written. Slurm's commands are stand-ins."""
    bin_dir = fake_commands(
        tmp_path / "bin", sbatch="", srun="", sacct="", scancel="", squeue="", sinfo="", scontrol=""
    )
    keys = ("WANDB_API_KEY", "WANDB_MODE", "ANTHROPIC_API_KEY")
    env = {k: v for k, v in os.environ.items() if k not in keys}
    env |= {"PATH": f"{bin_dir}:{env['PATH']}", "HOME": str(tmp_path)}  # (no ~/.netrc key either)
    runs = tmp_path / "runs"
    args = ["+campaign=gpt2", "cluster=slurm", f"runs_dir={runs}"]
    for extra, escapes in (
        ([], ["tracking=none", "agent=offline"]),
        (["tracking.mode=offline"], ["agent=offline"]),
    ):
        for command in (PYTHON_M, [*PYTHON_M, "check"]):
            proc = run(command, *args, *extra, env=env)
            assert proc.returncode == 2, proc.stderr
            lines = proc.stderr.splitlines()  # (each refusal on its own line)
            assert len(lines) == len(escapes), lines
            assert all(
                line.startswith("error: ") and escape in line
                for line, escape in zip(lines, escapes, strict=True)
            )
    assert not runs.exists()


def test_every_refusal_is_named_in_one_run(tmp_path: Path) -> None:
    """check stopped at the first refusal: a user who fixed a partition's CPUs met, at the next
    run, its constraint, then the W&B key, then the Claude key. Every one is named at once, each on
    a line of its own (the partition's in the fleet's line), and the start says the same. Slurm's
    commands are stand-ins; sinfo lists nodes of 8 CPUs without features."""
    sinfo = "echo 'h100|gpu:h100:8|infinite|8|64000|(null)'; echo 'h200|gpu:h200:8|infinite|8|64000|(null)'"
    bin_dir = fake_commands(
        tmp_path / "bin", sbatch="", srun="", sacct="", scancel="", squeue="", sinfo=sinfo, scontrol=""
    )
    keys = ("WANDB_API_KEY", "WANDB_MODE", "ANTHROPIC_API_KEY")
    env = {k: v for k, v in os.environ.items() if k not in keys}
    env |= {"PATH": f"{bin_dir}:{env['PATH']}", "HOME": str(tmp_path)}  # (no ~/.netrc key either)
    runs = tmp_path / "runs"
    args = toy_args(
        runs, "cluster=slurm", "cluster.partitions.h200.constraint=ib", "tracking=wandb", "agent=claude"
    )
    for command in (PYTHON_M, [*PYTHON_M, "check"]):
        proc = run(command, *args, env=env)
        assert proc.returncode == 2, proc.stderr
        fleet, wandb, claude = proc.stderr.splitlines()
        assert fleet.startswith("error: cluster.partitions.h100.cpus_per_task=16: no node of partition h100")
        assert "; cluster.partitions.h200.cpus_per_task=16: " in fleet
        assert "; cluster.partitions.h200.constraint=ib: in partition h200, no node has ib" in fleet
        assert wandb.startswith("error: W&B: no API key")
        assert claude.startswith("error: ANTHROPIC_API_KEY is not set")
    assert not runs.exists()


def test_an_override_after_a_hydra_flag_is_taken_as_it_is_before_it(tmp_path: Path) -> None:
    """`+campaign=NAME --config-dir=DIR key=value`, as the docs' pieces combine: Hydra's parser took
    the overrides as one run of words, and one after a flag ended in its usage and 'unrecognized
    arguments', for the check and the start alike."""
    runs = tmp_path / "runs"
    words = ["+campaign=toy", f"--config-dir={FIXTURE_CONF}", f"runs_dir={runs}", "cluster.devices=cpu"]
    checked = run([*PYTHON_M, "check"], *words)
    assert checked.returncode == 0, checked.stderr
    assert plan(checked.stdout)["campaign"] == f"new: {runs / 'toy'} does not exist yet (the start makes it)"
    printed = run(
        PYTHON_M, "+campaign=toy", "--config-dir", str(FIXTURE_CONF), f"runs_dir={runs}", "--cfg", "job"
    )
    assert printed.returncode == 0, printed.stderr
    assert f"runs_dir: {runs}" in printed.stdout.splitlines()
    assert not runs.exists()


@pytest.mark.parametrize(
    "asks",
    [
        "-m",
        "--multirun",
        "hydra.mode=MULTIRUN",
        "++hydra.mode='MULTIRUN'",
        "hydra.mode=2",
        "hydra.mode=RUN,MULTIRUN",
    ],
)
def test_a_multirun_is_refused_in_one_line_with_nothing_written(tmp_path: Path, asks: str) -> None:
    """Hydra's multirun made its sweep folder (multirun/DATE/TIME) in the working directory before
    any check, so even a refused check wrote it; and a sweep would run campaigns one after another.
    Hydra takes its mode from an override as from its flag."""
    runs = tmp_path / "runs"
    for command in ([*PYTHON_M, "check"], PYTHON_M):
        proc = run(command, *toy_args(runs), asks, cwd=tmp_path)
        assert proc.returncode == 2 and proc.stdout == ""
        assert proc.stderr.splitlines() == [
            "error: autoresearch runs one campaign a command, and takes no --multirun (-m) or "
            "hydra.mode=MULTIRUN: run a command for each campaign"
        ]
        assert list(tmp_path.iterdir()) == []


def test_a_value_with_a_comma_is_refused_with_the_quoting_that_passes_it_whole(tmp_path: Path) -> None:
    """docs/SLURM.md lets a partition list several, `h100,h200`, as `sbatch -p` takes them; typed so,
    Hydra reads a sweep and said only 'Ambiguous value for argument ...', its advice (quote it)
    on lines the one-line refusal left out. The quoted form it names is taken."""
    proc = check(tmp_path / "runs", "cluster.partitions.local.partition=a,b")
    assert proc.returncode == 2 and proc.stdout == ""
    quoted = "cluster.partitions.local.partition='a,b'"
    assert proc.stderr.splitlines() == [
        "error: bad config: cluster.partitions.local.partition=a,b: Hydra reads a value with a comma as several "
        f'to sweep over; to pass it as one, quote it: "{quoted}" (or a list, '
        "cluster.partitions.local.partition=[...], where the setting takes one)"
    ]
    assert check(tmp_path / "runs", quoted).returncode == 0


@pytest.mark.parametrize(
    "campaigns",
    [
        ["+campaign=toy", "+campaign=toy_hang"],
        ["+campaign=toy", "+campaign=toy"],
        ["+campaign=toy", "campaign=toy_hang"],
        ["+campaign=toy,toy_hang"],
    ],
)
def test_more_than_one_campaign_in_a_command_is_refused_in_one_line(
    tmp_path: Path, campaigns: list[str]
) -> None:
    """Hydra's words for two campaigns advised an `override campaign: ...` line, which belongs in
    a defaults list, for `+campaign=a +campaign=a` said the campaign appeared twice in its
    defaults list, and for `+campaign=a,b` only that the value was ambiguous."""
    runs = tmp_path / "runs"
    for command in ([*PYTHON_M, "check"], PYTHON_M):
        proc = run(command, *toy_args(runs, *campaigns), cwd=tmp_path)
        assert proc.returncode == 2 and proc.stdout == ""
        assert proc.stderr.splitlines() == [
            f"error: autoresearch runs one campaign a command, not {' '.join(campaigns)}: give "
            "+campaign=NAME once, and run a command for each campaign"
        ]
        assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("asks", "key"),
    [
        ("hydra.run.dir=elsewhere/out", "hydra.run.dir"),
        ("++hydra.run.dir=elsewhere", "hydra.run.dir"),
        ("hydra.output_subdir=.hydra", "hydra.output_subdir"),
        ("hydra.job.chdir=true", "hydra.job.chdir"),
        ("hydra.run={dir:elsewhere}", "hydra.run"),
    ],
)
def test_an_override_of_hydras_output_folder_is_refused_with_nothing_written(
    tmp_path: Path, asks: str, key: str
) -> None:
    """Hydra makes hydra.run.dir, writes output_subdir's files and moves into the folder before the
    task runs, so a command then refused for a bad setting (here a misspelt one) left them behind."""
    runs = tmp_path / "runs"
    for command in ([*PYTHON_M, "check"], PYTHON_M):
        proc = run(command, *toy_args(runs, "+campaign.wave_sise=2"), asks, "hydra.run.dir=out", cwd=tmp_path)
        assert proc.returncode == 2 and proc.stdout == ""
        assert proc.stderr.splitlines() == [
            f"error: autoresearch takes no {key}: Hydra would make its folder (write there, move into it) "
            "before any check, and a campaign keeps its files, its resolved config among them, in "
            "RUNS_DIR/NAME (set runs_dir=... to move them)"
        ]
        assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("words", "unread"),
    [
        (["campaign.budget.max_experiments", "=10"], "campaign.budget.max_experiments"),
        (["=10"], "=10"),
        (["campaign.name=my", "run"], "run"),
    ],
)
def test_an_override_hydra_cannot_read_says_how_to_write_one(
    tmp_path: Path, words: list[str], unread: str
) -> None:
    """A space typed around the = or inside a value split an override in two: Hydra said only
    'Error parsing override', and a word with nothing before its = ended in a ValueError traceback."""
    for command in ([*PYTHON_M, "check"], PYTHON_M):
        proc = run(command, *toy_args(tmp_path / "runs", *words), cwd=tmp_path)
        assert proc.returncode == 2 and proc.stdout == ""
        assert proc.stderr.splitlines() == [
            f"error: bad config: cannot read the override {unread!r}: an override is one word, key=value, "
            "with no space around the =; a value with spaces or other characters is quoted, \"key='a b'\""
        ]
    assert list(tmp_path.iterdir()) == []


def test_an_override_hydras_lexer_cannot_read_is_one_line(tmp_path: Path) -> None:
    """An unquoted letter outside ASCII: the multirun refusal's reading of the overrides must leave
    an override Hydra cannot read to Hydra's own one line, not end in a lexer's traceback."""
    for command in ([*PYTHON_M, "check"], PYTHON_M):
        proc = run(command, *toy_args(tmp_path / "runs", "campaign.name=ø"))
        assert proc.returncode == 2, proc.stderr
        (line,) = proc.stderr.splitlines()
        assert line.startswith("error: bad config: cannot read the override 'campaign.name=ø': ")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("override", "said"),
    [
        (
            "~campaign.seed",
            "cannot remove campaign.seed: a setting cannot be removed, only set, e.g. campaign.seed=0",
        ),
        (
            "~campaign.seed=1",
            "cannot remove campaign.seed: a setting cannot be removed, only set, e.g. campaign.seed=0",
        ),
        (
            "~campaign.budget",
            "cannot remove campaign.budget: a setting cannot be removed, only set, e.g. "
            "campaign.budget.max_experiments=12",
        ),
    ],
)
def test_a_deletion_override_says_a_setting_is_set_not_removed(
    tmp_path: Path, override: str, said: str
) -> None:
    """Hydra's `~key` said 'CampaignConfig (DictConfig) does not support deletion', and `~key=1`
    that the value is 0 and not 1: neither said what a user could do instead."""
    for command in ([*PYTHON_M, "check"], PYTHON_M):
        proc = run(command, *toy_args(tmp_path / "runs", override))
        assert proc.returncode == 2 and proc.stdout == "", proc.stderr
        assert proc.stderr.splitlines() == [f"error: bad config: {said}"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("override", "said"),
    [
        (
            "storage=${oc.env:AUTORESEARCH_TEST_UNSET}",
            "storage: the environment variable AUTORESEARCH_TEST_UNSET is not set: set it, or give a "
            "default, ${oc.env:AUTORESEARCH_TEST_UNSET,VALUE}",
        ),
        ("campaign.name=${nope}", "campaign.name: Interpolation key 'nope' not found"),
    ],
)
def test_an_interpolation_that_does_not_resolve_is_one_line(tmp_path: Path, override: str, said: str) -> None:
    """`runs_dir=${oc.env:SCRATCH}/runs` with SCRATCH unset, as a batch job may run it: OmegaConf
    resolves it as the config is built, and its error ended the check and the start in a
    100-line traceback, exit 1."""
    env = {k: v for k, v in os.environ.items() if k != "AUTORESEARCH_TEST_UNSET"}
    for command in ([*PYTHON_M, "check"], PYTHON_M):
        proc = run(command, *toy_args(tmp_path / "runs", override), env=env)
        assert proc.returncode == 2 and proc.stdout == "", proc.stderr
        assert proc.stderr.splitlines() == [f"error: bad config: {said}"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("group", ["campaign", "cluster"])
def test_a_config_dir_file_named_as_a_shipped_one_is_refused(tmp_path: Path, group: str) -> None:
    """Hydra looks in conf/ first: a `campaign/demo.yaml` or `cluster/local.yaml` of the user's,
    copied and edited, was passed over for the shipped file without a word, and the shipped
    campaign or cluster ran in its place."""
    own = tmp_path / "mine"
    shutil.copytree(FIXTURE_CONF, own)
    name = {"campaign": "demo", "cluster": "local"}[group]
    (own / group).mkdir(exist_ok=True)
    shutil.copy(REPO / "conf" / group / f"{name}.yaml", own / group / f"{name}.yaml")
    chosen = "+campaign=demo" if group == "campaign" else "+campaign=toy"
    words = [chosen, f"--config-dir={own}", f"runs_dir={tmp_path / 'runs'}", "cluster.devices=cpu"]
    for command in ([*PYTHON_M, "check"], PYTHON_M):
        proc = run(command, *words)
        assert proc.returncode == 2 and proc.stdout == "", proc.stderr
        taken = f"{'+' if group == 'campaign' else ''}{group}="
        assert proc.stderr.splitlines() == [
            f"error: bad config: {own / group / name}.yaml has the name of a shipped {group} file, "
            f"conf/{group}/{name}.yaml, which is the one {taken}{name} takes: give yours another name "
            f"({group}/my-{name}.yaml, {taken}my-{name})"
        ]
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("loads", "taken"),
    [
        ("override /cluster@_global_.cluster: slurm", "the one cluster=slurm takes"),
        (
            "/cluster/slurm@_global_.cluster",
            "the one the defaults list of campaign/mine loads as cluster/slurm",
        ),
    ],
)
def test_a_config_dir_file_named_as_a_shipped_one_and_loaded_by_a_campaign_file_is_refused(
    tmp_path: Path, loads: str, taken: str
) -> None:
    """A campaign file of the user's whose own defaults list loads `cluster/slurm`, beside an edited
    copy of it in the same --config-dir: the check read the command line's choices alone, and the
    shipped slurm.yaml was merged in without a word where it was loaded as a config, not chosen."""
    own = tmp_path / "mine"
    shutil.copytree(FIXTURE_CONF, own)
    (own / "cluster").mkdir()
    shutil.copy(REPO / "conf" / "cluster" / "slurm.yaml", own / "cluster" / "slurm.yaml")
    toy = (FIXTURE_CONF / "campaign" / "toy.yaml").read_text()
    (own / "campaign" / "mine.yaml").write_text(f"defaults:\n  - {loads}\n  - _self_\n{toy}")
    words = ["+campaign=mine", f"--config-dir={own}", f"runs_dir={tmp_path / 'runs'}"]
    for command in ([*PYTHON_M, "check"], PYTHON_M):
        proc = run(command, *words)
        assert proc.returncode == 2 and proc.stdout == "", proc.stderr
        assert proc.stderr.splitlines() == [
            f"error: bad config: {own}/cluster/slurm.yaml has the name of a shipped cluster file, "
            f"conf/cluster/slurm.yaml, which is {taken}: give yours another name (cluster/my-slurm.yaml"
            + (", cluster=my-slurm)" if "=" in taken else ") and load that")
        ]
    assert not (tmp_path / "runs").exists()


def test_a_checkout_whose_conf_folder_is_a_link_runs_its_shipped_campaigns(tmp_path: Path) -> None:
    """conf/ a symbolic link (a checkout whose configs live on another disk, or are shared): Hydra
    gave its path resolved, conf/ was compared unresolved, and every shipped campaign was refused
    as a --config-dir file with a shipped file's name."""
    checkout = tmp_path / "checkout"
    shutil.copytree(
        REPO / "autoresearch", checkout / "autoresearch", ignore=shutil.ignore_patterns("__pycache__")
    )
    for linked in ("conf", "trainer"):
        (checkout / linked).symlink_to(REPO / linked)
    proc = subprocess.run(
        [sys.executable, "-m", "autoresearch", "check", "+campaign=demo", f"runs_dir={tmp_path / 'runs'}"],
        cwd=checkout,
        env={**os.environ, "PYTHONPATH": str(checkout)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "has the name of a shipped" not in proc.stderr and proc.returncode == 0, proc.stderr + proc.stdout


def test_a_campaign_given_by_its_files_path_is_told_the_command_that_runs_it(tmp_path: Path) -> None:
    """`+campaign=PATH/campaign/mine.yaml`, the file one has just written: Hydra looked for it by
    name under campaign/ and said only that it could not find it, among the names it has."""
    toy = FIXTURE_CONF / "campaign" / "toy.yaml"
    proc = run([*PYTHON_M, "check"], f"+campaign={toy}", f"runs_dir={tmp_path / 'runs'}")
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.splitlines()
    assert line.endswith(f": +campaign takes a name, not a path: --config-dir={FIXTURE_CONF} +campaign=toy")
    assert not (tmp_path / "runs").exists()


def test_hydra_mode_run_is_taken_as_the_run_it_is(tmp_path: Path) -> None:
    """Only a multirun is refused: an override that names the mode a run has anyway checks as one."""
    checked = check(tmp_path / "runs", "hydra.mode=RUN")
    assert checked.returncode == 0, checked.stderr
    assert plan(checked.stdout)["campaign"].startswith("new: ")


@pytest.fixture(scope="module")
def finished_toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A runs_dir holding a toy campaign that ran to its experiment budget on 1 thread a slot."""
    runs = tmp_path_factory.mktemp("finished")
    started = run_campaign(runs, "campaign.budget.max_experiments=5", "cluster.threads_per_slot=1")
    assert started.returncode == 0, started.stdout + started.stderr
    return runs


def start_refusal(proc: subprocess.CompletedProcess) -> str:
    """The one line a refused start said why in: its `error:` line, or its log's ERROR line (the
    refusals it makes once it holds the folder), without the time and level."""
    said = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    said += [m[1] for m in re.finditer(r"^\S+ ERROR +(.+)$", proc.stdout, re.M)]
    assert proc.returncode == 2 and len(said) == 1, proc.stdout + proc.stderr
    return said[0].removeprefix("error: ")


def searched_knob(campaign: Path) -> str:
    """A knob the campaign's study searched (a trial set it)."""
    return next(name for t in load(campaign).trials for name in t.distributions)


def hold_lock(campaign: Path) -> int:
    """The folder's lock, taken as a running controller holds it (its pid written in it)."""
    fd = os.open(campaign / "controller.lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def test_a_resume_is_estimated_from_the_slot_times_its_study_measured(
    tmp_path: Path, finished_toy: Path
) -> None:
    """The config's training time alone is a lower bound of the time a slot is held (the demo's
    15 s held one 19-30 s): a resume's rate is the study's own, the median held time of each
    tier's experiments that ran."""
    study = load(finished_toy / "toy")
    held = [
        t.user_attrs["ended_at"] - t.user_attrs["started_at"]
        for t in study.trials
        if t.state.is_finished() and t.user_attrs.get("started_at") is not None
    ]
    assert len(held) >= 3  # the baselines and the experiments that ran, all on the screen tier
    slots, seconds = 2, statistics.median(held)
    per_hour = slots * 3600 / seconds
    left = math.ceil(per_hour / 6)  # about 10 minutes of experiments
    launched = sum(1 for t in study.trials if "exp_dir" in t.user_attrs)
    budget = f"campaign.budget.max_experiments={launched + left}"
    proc = check(finished_toy, budget, "cluster.threads_per_slot=1")
    assert proc.returncode == 0, proc.stderr
    said = plan(proc.stdout)
    assert said["screen"].endswith(
        f"about {per_hour:.1f} experiments/h (a slot held a median {seconds:.1f} s, from {len(held)} "
        "experiments measured), $0.00/h"
    )
    assert said["estimate"] == (
        f"about {per_hour:.1f} experiments/h, {slots} CPU-hours/h, $0.00/h (from {len(held)} experiments measured)"
    )
    minutes = left / per_hour * 60
    assert said["budgets"].startswith(f"max_experiments: {left} left, reached in about {minutes:.0f} min")


def test_a_resume_whose_budget_is_spent_says_in_its_first_line_that_it_would_stop_and_what_to_raise(
    tmp_path: Path, finished_toy: Path
) -> None:
    """Its first line said "would start", and only the budgets line, further down, that it would
    stop at once: it now says so, with the setting to raise in the start's own words."""
    runs = tmp_path / "runs"
    shutil.copytree(finished_toy, runs)
    same = ["campaign.budget.max_experiments=5", "cluster.threads_per_slot=1"]
    study = load(runs / "toy")
    launched = sum(1 for t in study.trials if "exp_dir" in t.user_attrs)
    owed = len(Ledger(study, time.time, lambda: None).owed())  # re-runs a decision waits for
    then = f"run only the {owed} queued run{'s' if owed > 1 else ''} a decision waits for, then stop"
    stops = f"would start and {then if owed else 'stop at once'}: {_experiments_reached(launched, 5)}"
    checked = check(runs, *same)
    assert checked.returncode == 0, checked.stderr
    headline = plan(checked.stdout)["check"]
    assert headline.startswith(f"campaign toy {stops}; ")
    started = run(PYTHON_M, *toy_args(runs, *same))
    assert started.returncode == 0, started.stdout + started.stderr
    (hint,) = re.findall(r"^\S+ INFO +(to go on, .+)$", started.stdout, re.M)  # the start's own words
    assert hint.endswith("a larger campaign.budget.max_experiments")
    assert headline == f"campaign toy {stops}; {hint}; nothing was written or launched"


def starting_files(folder: Path) -> list[str]:
    """The overrides that begin a toy campaign from the train.py and prepare.py in `folder`."""
    return [f"campaign.train_py={folder / 'train.py'}", f"campaign.prepare_py={folder / 'prepare.py'}"]


@pytest.fixture(scope="module")
def toy_of_own_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding copies of the toy's train.py and prepare.py and, in runs/, a toy campaign
    begun from them that ran to its experiment budget."""
    folder = tmp_path_factory.mktemp("own_files")
    for name in ("train.py", "prepare.py"):
        shutil.copy(REPO / "tests" / "fixtures" / "toy" / name, folder / name)
    started = run_campaign(
        folder / "runs",
        *starting_files(folder),
        "campaign.budget.max_experiments=3",
        "cluster.threads_per_slot=1",
    )
    assert started.returncode == 0, started.stdout + started.stderr
    return folder


@pytest.mark.parametrize("changed", ["train.py", "prepare.py", None])
def test_a_resume_check_warns_as_the_start_does_of_a_starting_file_changed_since(
    tmp_path: Path, toy_of_own_files: Path, changed: str | None
) -> None:
    """A starting file changed after the first experiment (a git pull, an edit) is not used, and
    the start warned so, but the check said nothing: a user checking before a resume was not told."""
    folder = tmp_path / "own_files"
    shutil.copytree(toy_of_own_files, folder)
    if changed:
        with (folder / changed).open("a") as edited:
            edited.write("# changed by a git pull\n")
    overrides = [*starting_files(folder), "campaign.budget.max_experiments=3", "cluster.threads_per_slot=1"]
    before = tree(folder)
    checked = check(folder / "runs", *overrides)
    assert checked.returncode == 0, checked.stderr
    assert tree(folder) == before
    warned = re.findall(r"^warning +(.+)$", checked.stdout, re.M)
    campaign = folder / "runs" / "toy"
    assert (
        warned
        == {
            "train.py": [
                f"campaign.train_py ({folder / 'train.py'}) is not the train.py this campaign started from: "
                "it goes on from its frontier (frontier/train.py) and measures baselines with its first version; "
                "a new campaign.name starts from the new one"
            ],
            "prepare.py": [
                f"campaign.prepare_py ({folder / 'prepare.py'}) is not the harness this campaign started "
                f"with: it goes on measuring with its own copy, {campaign / 'harness' / 'prepare.py'}, so that its "
                "results stay comparable (a new campaign.name measures with the new one)"
            ],
            None: [],
        }[changed]
    )
    started = run(PYTHON_M, *toy_args(folder / "runs", *overrides))
    assert started.returncode == 0, started.stdout + started.stderr
    assert warned == re.findall(r"^\S+ WARNING +(.+)$", started.stdout, re.M)  # the start's own words


def test_a_resume_check_says_what_the_start_repairs_in_a_journal_a_killed_controller_left(
    tmp_path: Path, finished_toy: Path
) -> None:
    """A controller killed while it appended to the study journal leaves the journal's lock file
    and a torn last line: the start removes and drops them, a line each, but the check said
    nothing of either. It says each in the start's words, and repairs nothing itself."""
    runs = tmp_path / "runs"
    shutil.copytree(finished_toy, runs)
    journal = runs / "toy" / "study.journal"
    with journal.open("ab") as appended:
        appended.write(b'{"op_code": 8, "worker_id": "ab')  # 31 bytes, cut short
    Path(f"{journal}{LOCK_FILE_SUFFIX}").touch()
    same = ["campaign.budget.max_experiments=5", "cluster.threads_per_slot=1"]
    before = tree(runs)
    checked = check(runs, *same)
    assert checked.returncode == 0, checked.stderr
    assert tree(runs) == before
    repairs = re.findall(r"^repair +the start (\w+) (.+)$", checked.stdout, re.M)
    assert repairs == [
        ("removes", "the study journal's lock, left by a controller killed while writing it"),
        (
            "drops",
            "the torn last 31 bytes of the study journal: a controller was killed, or its disk full, "
            "while writing them",
        ),
    ]
    started = run(PYTHON_M, *toy_args(runs, *same))
    assert started.returncode == 0, started.stdout + started.stderr
    done = re.findall(
        r"^\S+ (?:INFO|WARNING) +(removed|dropped) (the (?:study journal's lock,|torn) .+)$",
        started.stdout,
        re.M,
    )
    assert done == [("removed", repairs[0][1]), ("dropped", repairs[1][1])]  # the start's own words


@pytest.mark.parametrize("command", [PYTHON_M, [CONSOLE_SCRIPT]], ids=["python -m", "console script"])
def test_check_help_is_its_own_usage(tmp_path: Path, command: list[str]) -> None:
    proc = subprocess.run(
        [*command, "check", "+campaign=demo", f"runs_dir={tmp_path}", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and proc.stderr == ""
    prog = "autoresearch" if command == [CONSOLE_SCRIPT] else "python -m autoresearch"
    assert proc.stdout.startswith(f"usage: {prog} check +campaign=NAME ")
    assert "the same overrides as a run" in proc.stdout and "== Groups" not in proc.stdout
    assert re.search(r"^ +0 +the start would go ahead", proc.stdout, re.M)
    assert re.search(r"^ +2 +the start would be refused", proc.stdout, re.M)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "refusal",
    [
        "hardware",
        "knob held in the study",
        "measurement held in the study",
        "no git",
        "locked",
        "frontier deleted",
        "frontier reset",
        "study emptied",
        "study from an older copy",
        "lock file a folder",
        "harness edited",
        "min_delta the frontier cannot give",
    ],
)
def test_a_resume_the_start_would_refuse_as_it_opens_the_study_is_refused_in_its_line(
    tmp_path: Path, finished_toy: Path, refusal: str
) -> None:
    """The refusals the start makes once it holds the folder and has its study open: a check that
    missed them said "would start", exit 0, where the start then refused."""
    runs = tmp_path / "runs"
    shutil.copytree(finished_toy, runs)
    campaign = runs / "toy"
    overrides, env, knob = ["campaign.budget.max_experiments=9"], {}, searched_knob(campaign)
    if refusal == "hardware":
        overrides.append("cluster.threads_per_slot=2")
    elif refusal == "knob held in the study":  # config.yaml forgets a knob left out of a run
        left_out = run_campaign(runs, "campaign.budget.max_experiments=5", f"~campaign.knobs.{knob}")
        assert left_out.returncode == 0 and f"{knob}:" not in (campaign / "config.yaml").read_text()
        overrides.append(f"campaign.knobs.{knob}.log=false")
    elif refusal == "measurement held in the study":  # config.yaml gone: the study still holds it
        (campaign / "config.yaml").unlink()
        overrides.append("campaign.time_budget=2")
    elif refusal == "no git":
        empty = tmp_path / "bin"  # processes start from sys.executable: nothing else is on PATH
        empty.mkdir()
        env = {"PATH": str(empty)}
    elif refusal == "frontier deleted":  # resumed, it went on from the start, its keeps lost unsaid
        shutil.rmtree(campaign / "frontier")
    elif refusal == "frontier reset":  # a kept change undone by hand
        subprocess.run(["git", "reset", "-q", "--hard", "HEAD~1"], cwd=campaign / "frontier", check=True)
    elif refusal == "lock file a folder":  # (by hand, or a bad copy): no controller can hold it
        (campaign / "controller.lock").unlink()
        (campaign / "controller.lock").mkdir()
    elif refusal == "study emptied":  # resumed, it numbered trials anew, into folders of runs that ended
        (campaign / "study.journal").write_bytes(b"")
    elif refusal == "study from an older copy":
        journal = campaign / "study.journal"
        journal.write_text("".join(journal.read_text().splitlines(keepends=True)[:60]))
    elif refusal == "harness edited":  # later runs would be scored by another metric than earlier ones
        with (campaign / "harness" / "prepare.py").open("a") as harness:
            harness.write("# edited in the campaign folder\n")
    elif refusal == "min_delta the frontier cannot give":  # a keep would need a val_bpb below 0
        frontier_bpb = frontier_value(rows(load(campaign)))[1]
        overrides.append(f"campaign.min_delta={frontier_bpb!r}")
    fd = hold_lock(campaign) if refusal == "locked" else None
    heartbeat = (campaign / "controller.json").read_bytes()
    before = tree(runs)
    try:
        checked = check(runs, *overrides, env=env)
        assert checked.returncode == 2 and checked.stdout == ""
        (line,) = checked.stderr.splitlines()
        assert tree(runs) == before  # no lock file, log, journal line or config.yaml
        started = run(PYTHON_M, *toy_args(runs, *overrides), env={**os.environ, **env})
    finally:
        if fd is not None:
            os.close(fd)
    assert line == f"error: {start_refusal(started)}"
    # the start, refused, ran nothing: status still says how the campaign last stopped
    assert (campaign / "controller.json").read_bytes() == heartbeat
    frontier, last = campaign / "frontier", max(int(p.name) for p in campaign.glob("experiments/*"))
    expected = {
        "hardware": f"the screen tier of {campaign} measured on cpu, 1 thread per slot, this command "
        "runs it on cpu, 2 threads per slot (local)",
        "knob held in the study": f"campaign.knobs.{knob}: the study of {campaign} searched it as ",
        "measurement held in the study": f"seconds of training per experiment: {campaign} started with "
        "1.0, this command says 2.0",
        "no git": "git is not on PATH",
        "locked": f"another controller (pid {os.getpid()}) is running {campaign}: ",
        "frontier deleted": f"the frontier {frontier} is gone, but ",
        "frontier reset": f"the frontier {frontier} lacks 1 commit(s) the study's trials name (",
        "lock file a folder": f"cannot open the campaign's lock file {campaign / 'controller.lock'} "
        "(Is a directory): no controller can hold it, and a start makes it anew: remove it",
        "study emptied": f"{campaign / 'experiments'} holds experiment {last:05d}, but its study "
        f"({campaign / 'study.journal'}) holds no trial: the study lost what it recorded",
        "study from an older copy": f"{campaign / 'experiments'} holds experiment {last:05d}, but its study "
        f"({campaign / 'study.journal'}) holds ",
        "harness edited": f"{campaign / 'harness' / 'prepare.py'} is not the harness this campaign's "
        f"experiments measured with ({campaign / 'experiments' / '00000' / 'prepare.py'}): put that copy back",
        "min_delta the frontier cannot give": "campaign.min_delta=",
    }[refusal]
    assert line.startswith(f"error: {expected}")
    if refusal == "frontier deleted":  # not begun again from the starting train.py
        assert not frontier.exists()
    if refusal == "no git":  # refused before the start makes or writes anything
        assert tree(runs) == before
    if refusal == "min_delta the frontier cannot give":
        assert f"is at or above the frontier's val_bpb {frontier_bpb:.6f}: " in line
        below = check(runs, *overrides[:-1], f"campaign.min_delta={frontier_bpb * 0.99!r}")
        assert below.returncode == 0, below.stderr  # a min_delta it can give is the campaign's to choose


def test_a_database_study_another_folder_holds_is_refused_in_the_start_line(tmp_path: Path) -> None:
    database = tmp_path / "study.db"
    storage = f"storage=sqlite:///{database}"
    first = run_campaign(tmp_path / "first", storage, "campaign.budget.max_experiments=3")
    assert first.returncode == 0, first.stdout + first.stderr
    other = tmp_path / "other"
    before = tree(tmp_path)
    checked = check(other, storage)
    assert checked.returncode == 2 and checked.stdout == ""
    (line,) = checked.stderr.splitlines()
    assert line.startswith(
        f"error: {storage} holds a study 'toy' started by another campaign folder than {other / 'toy'}: "
    )
    assert tree(tmp_path) == before  # no folder, no study id, the database as it was
    started = run(PYTHON_M, *toy_args(other, storage))
    assert started.returncode == 2 and started.stderr.splitlines() == [line]
    assert tree(tmp_path) == before  # nor a folder the next start would find


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
def test_a_slurm_campaign_is_planned_per_tier(tmp_path: Path) -> None:
    proc = check(tmp_path, "cluster=slurm_local", "campaign.time_budget=30")
    assert proc.returncode == 0, proc.stderr
    assert list(tmp_path.iterdir()) == []
    said = plan(proc.stdout)
    assert said["screen"].startswith("partition h100: 2 x h100, 30 s of training per experiment")
    assert said["validate"].startswith("partition h200: 1 x h200, 30 s of training per experiment")
    assert "Slurm time limit 30 min" in said["screen"]
    assert said["estimate"].startswith(f"up to {3 * 3600 / 30:.1f} experiments/h, 3 GPU-hours/h")


def test_slots_capped_by_max_queued_are_said_and_estimated_as_capped(tmp_path: Path) -> None:
    """A partition asked for more slots than cluster.max_queued runs that many (SLURM.md,
    "Cluster-wide settings"): the plan said 64 x a100 where the file said 100, without a word of
    why, and a user adapting slots to a budget read it as a typo. Slurm's commands are stand-ins."""
    bin_dir = fake_commands(
        tmp_path / "bin", sbatch="", srun="", sacct="", scancel="", squeue="", sinfo="", scontrol=""
    )
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    overrides = ["cluster=slurm", "campaign.time_budget=30", "cluster.max_queued=4"]
    proc = check(tmp_path / "runs", *overrides, env=env)
    assert proc.returncode == 0, proc.stderr
    said = plan(proc.stdout)
    assert said["screen"].startswith(
        "partition h100: 4 x h100 (cluster.max_queued=4 caps its 13 slots), 30 s of training per experiment"
    )
    assert said["screen"].endswith(f"${4 * 2.5:.2f}/h")
    assert said["validate"].startswith("partition h200: 3 x h200, 30 s")  # (under the cap: as asked)
    assert said["estimate"].startswith(f"up to {7 * 3600 / 30:.1f} experiments/h, 7 GPU-hours/h, $20.50/h")


def test_a_tier_whose_slots_were_held_no_time_is_estimated_from_its_training_time(tmp_path: Path) -> None:
    """Slot times are clamped at 0 where a node's clock ran ahead of the controller's: a median of
    0 s divided the slots by it (ZeroDivisionError, a traceback from `autoresearch check`)."""
    cfg = compose_toy(tmp_path, "cluster.devices=cpu")
    pools = plan_fleet(cfg.cluster).pools
    skewed = {
        "exp_dir": "experiments/00000",
        "pool": "local",
        "tier": "screen",
        "started_at": 9.0,
        "ended_at": 8.0,
    }
    ended = [create_trial(state=TrialState.COMPLETE, value=1.0, user_attrs=skewed) for _ in range(3)]
    paces = tier_paces(cfg, pools, ended)
    assert paces["screen"] == Pace(time_budget_seconds(cfg), 0)
    assert campaign_rate(cfg, pools, paces).experiments == pools["local"].slots * 3600 / time_budget_seconds(
        cfg
    )


def test_check_on_a_loaded_machine_says_the_estimate_at_its_load(tmp_path: Path) -> None:
    """CPU slots train for CPU-seconds, which a loaded machine stretches in wall time: beside helpers'
    tests the demo's 15 s runs took 100 s and more, and check still said its 30 experiments took
    about 4 minutes. With the load average above what the cores and the slots' own threads allow,
    a line says the estimate at that load, and that it holds while the load does."""
    cfg = compose_toy(
        tmp_path, "cluster.cpu_slots=2", "cluster.threads_per_slot=1", "campaign.budget.max_experiments=30"
    )
    pools = plan_fleet(cfg.cluster).pools
    seconds = time_budget_seconds(cfg) * (6.0 + 2) / 2  # the cores shared among the load and 2 threads
    per_hour = 2 * 3600 / seconds
    assert dict(_load_lines(cfg, pools, NOTHING_SPENT, CpuLoad(load=6.0, cores=2))) == {
        "load": f"load average 6.0 on 2 CPUs, and the slots' own threads: each CPU-second of training takes "
        f"about 4.0 s, so up to {per_hour:.1f} experiments/h; max_experiments reached in about "
        f"{30 / per_hour * 60:.0f} min (while this load lasts)"
    }
    assert _load_lines(cfg, pools, NOTHING_SPENT, CpuLoad(load=2.0, cores=4)) == []  # cores enough for all
    assert _load_lines(cfg, pools, NOTHING_SPENT, None) == []  # no load average (Windows)


def test_check_on_a_loaded_login_node_says_no_load_line_for_slurm_cpu_slots(tmp_path: Path) -> None:
    """A Slurm partition of CPU nodes (gpu_type cpu) runs its experiments on those nodes, not under
    the load of the machine check runs on: on a busy login node check said "load average 6.0 on 2
    CPUs ... each CPU-second of training takes about 4.0 s" and a budget's time for runs that the
    login node's load does not touch. Only the local fleet's CPU slots get the load line."""
    cfg = compose_config(
        "+campaign=toy", f"runs_dir={tmp_path}", "cluster=slurm", "cluster.partitions.h100.gpu_type=cpu"
    )
    pools = {"h100": slurm_pool("h100", cfg.cluster.partitions["h100"], cfg.cluster.max_queued)}
    assert _load_lines(cfg, pools, NOTHING_SPENT, CpuLoad(load=6.0, cores=2)) == []


def test_check_on_a_quiet_machine_says_no_load_line(tmp_path: Path) -> None:
    """By default a CPU slot's threads are the cores shared out among the slots, so any load at
    all, a quiet machine's 0.05, put the slots past the cores: check said "each CPU-second of
    training takes about 1.0 s" and the budget's time unchanged, a loaded machine that was not.
    A stretch within the quiet estimate's own error is not said."""
    cfg = compose_toy(tmp_path, "cluster.cpu_slots=2", "cluster.threads_per_slot=1")
    pools = plan_fleet(cfg.cluster).pools
    assert _load_lines(cfg, pools, NOTHING_SPENT, CpuLoad(load=0.05, cores=2)) == []
    assert _load_lines(cfg, pools, NOTHING_SPENT, CpuLoad(load=0.4, cores=2)) == []  # 1.2 s a CPU-second
    assert _load_lines(cfg, pools, NOTHING_SPENT, CpuLoad(load=0.6, cores=2))  # 1.3 s: said


HARNESS = f"campaign.prepare_py={REPO / 'trainer' / 'prepare.py'}"


def test_a_cache_the_data_step_could_not_make_is_refused_in_one_line_with_nothing_written(
    tmp_path: Path,
) -> None:
    """A cache under a file passed the check ("campaign toy would start"), and the start then failed
    in its data step; the check asks the harness (`prepare.py --check`) and refuses as it would."""
    (tmp_path / "afile").write_text("")
    cache = tmp_path / "afile" / "cache"
    before = tree(tmp_path)
    checked = check(tmp_path / "runs", HARNESS, env={"AUTORESEARCH_CACHE": str(cache)})
    assert checked.returncode == 2 and checked.stdout == "", checked.stdout
    assert checked.stderr.splitlines() == [
        f"error: its data step would fail: {tmp_path / 'afile'} is not a folder, so "
        f"{cache / 'data'}/offline-py{sys.version_info[0]}{sys.version_info[1]} cannot be made for the offline "
        f"corpus (the cache is {cache}; AUTORESEARCH_CACHE chooses another)"
    ]
    assert tree(tmp_path) == before


def test_the_data_line_says_a_prepared_cache_is_ready_and_what_an_empty_one_needs(
    tmp_path: Path, offline_cache: Path
) -> None:
    prepared = plan(check(tmp_path / "runs", HARNESS, env={"AUTORESEARCH_CACHE": str(offline_cache)}).stdout)
    assert (
        prepared["data"]
        == f"ready: the offline data and the 2048-token tokenizer are prepared in {offline_cache}"
    )
    empty = tmp_path / "cache"
    empty.mkdir()
    needed = plan(check(tmp_path / "runs", HARNESS, env={"AUTORESEARCH_CACHE": str(empty)}).stdout)
    assert needed["data"] == f"would build the offline corpus and train the 2048-token tokenizer in {empty}"
    assert list(tmp_path.iterdir()) == [empty] and list(empty.iterdir()) == []
    unchecked = plan(check(tmp_path / "runs", HARNESS, "campaign.prepare_data=false").stdout)
    assert "data" not in unchecked and "budgets" in unchecked


# A harness whose --check is held where KILL cannot end it (a cache on a hung mount; here it joins
# the frozen freezer cgroup FROZEN_GROUP), its pid written first to FROZEN_PID_FILE.
FROZEN_CHECK_HARNESS = """import argparse, os, pathlib, sys, time
parser = argparse.ArgumentParser()
parser.add_argument("--check", action="store_true")
parser.parse_known_args()
pathlib.Path(os.environ["FROZEN_PID_FILE"]).write_text(str(os.getpid()))
pathlib.Path(os.environ["FROZEN_GROUP"], "cgroup.procs").write_text(str(os.getpid()))
time.sleep(600)
"""


@pytest.mark.skipif(not os.access(FREEZER, os.W_OK), reason="no cgroup v1 freezer this user may write")
def test_a_data_check_kill_cannot_end_does_not_hold_up_the_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A harness's --check held in uninterruptible sleep (a cache on a hung mount) was KILLed on
    its timeout and then waited for, for ever: `autoresearch check` did not return. It is KILLed
    and not waited for (here frozen, so the check would not return), and the data line says so."""
    monkeypatch.setattr(dry_run, "DATA_CHECK_TIMEOUT_S", 5.0)  # it freezes itself well within it
    (harness := tmp_path / "prepare.py").write_text(FROZEN_CHECK_HARNESS)
    cfg = compose_toy(tmp_path / "runs", f"campaign.prepare_py={harness}")
    said: list[str] = []
    with freezer_cgroup() as group:
        (group / "freezer.state").write_text("FROZEN")
        monkeypatch.setenv("FROZEN_GROUP", str(group))
        monkeypatch.setenv("FROZEN_PID_FILE", str(pid_file := tmp_path / "check.pid"))
        checking = threading.Thread(
            target=lambda: said.append(dry_run._data_said(cfg, tmp_path)), daemon=True
        )
        checking.start()
        checking.join(60)
        assert not checking.is_alive(), "the check waited for a harness KILL cannot end"
        frozen_pid = int(pid_file.read_text())
        assert state_of(frozen_pid) == "D"  # (the KILL met it frozen: not ended before it froze)
    wait_for(lambda: not Path(f"/proc/{frozen_pid}").exists(), 60, "the thawed harness to be reaped")
    assert said == [f"not checked: {harness} --check gave no answer in 5 s (a hung cache mount?)"]


# A harness that takes no --check, though its text names it (its usage line, a comment, an option
# --checkpoint), and that ignores options it does not know: asked --check, it runs its step.
NO_CHECK_HARNESS = '''"""Usage: python prepare.py [--scale S] [--data D] [--checkpoint] (older than --check)"""
import argparse, os, pathlib
parser = argparse.ArgumentParser()
parser.add_argument("--scale")
parser.add_argument("--data")
parser.add_argument("--checkpoint", action="store_true")  # (not --check)
parser.parse_known_args()
pathlib.Path(os.environ["AUTORESEARCH_CACHE"], "prepared").write_text("the step ran")
'''


def test_a_harness_whose_text_names_check_but_takes_none_is_not_checked_nor_run(tmp_path: Path) -> None:
    """Whether the harness takes --check was told by the text '--check' in it: a harness that
    named it only in its usage line, a comment or a --checkpoint option was asked, and ran its data
    step during the check (or refused it on argparse's usage error). It is now told by the option
    the harness declares, and such a harness is 'not checked', nothing run."""
    harness, cache = tmp_path / "prepare.py", tmp_path / "cache"
    harness.write_text(NO_CHECK_HARNESS)
    cache.mkdir()
    checked = check(
        tmp_path / "runs", f"campaign.prepare_py={harness}", env={"AUTORESEARCH_CACHE": str(cache)}
    )
    assert checked.returncode == 0, checked.stderr
    assert plan(checked.stdout)["data"] == f"not checked: {harness} takes no --check"
    assert list(cache.iterdir()) == []
