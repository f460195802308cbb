"""Shared helpers for the engine tests: run the real CLI on the toy campaign."""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import optuna
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial

from autoresearch.campaign import Campaign
from autoresearch.config import (
    AutoresearchConfig,
    ClusterConfig,
    backstop_grace,
    campaign_dir_of,
    deadline_seconds,
    register_configs,
)
from autoresearch.fleet.base import Finished, Fleet, JobSpec, Pool
from autoresearch.fleet.factory import build_fleet, plan_fleet
from autoresearch.fleet.local import LocalFleet
from autoresearch.frontier import Frontier
from autoresearch.intake import Intake
from autoresearch.ledger import Ledger
from autoresearch.proposals import Candidate, Wave
from autoresearch.proposers.base import CampaignContext, Proposer
from autoresearch.proposers.offline import OfflineProposer
from autoresearch.sampler import AgentSampler, knob_specs
from autoresearch.study import open_study
from autoresearch.workspace import sha256_file

REPO = Path(__file__).resolve().parents[1]
FIXTURE_CONF = REPO / "tests" / "fixtures" / "conf"
TOY = REPO / "tests" / "fixtures" / "toy"
# A train.py that records the environment it was given, then reports a result.
ENV_DUMP = "import json, os, prepare\njson.dump(dict(os.environ), open('env.json', 'w'))\nprepare.write_result({'val_bpb': 1.0})\n"


# runner.pid's kernel view (`fleet.runner_pid.kernel_view`) as another machine's boot writes it
ANOTHER_KERNEL = "0f2c6a53-0000-4000-8000-000000000000/4:4026531836"


def load_script(name: str) -> ModuleType:
    """A script of scripts/ as a module, for testing its parts."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[name] = module  # as an import would: dataclasses look their module up there
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def make_experiment(
    parent: Path, train_py: str, deadline: float = 30.0, name: str = "exp", trial: int = 7
) -> Path:
    """An experiment folder as the campaign writes it: train.py, the toy harness, spec.json."""
    exp = parent / name
    exp.mkdir()
    (exp / "train.py").write_text(train_py)
    shutil.copy(TOY / "prepare.py", exp / "prepare.py")
    spec = {
        "trial": trial,
        "deadline_s": deadline,
        "harness_sha256": sha256_file(TOY / "prepare.py"),
        "env": {},
    }
    (exp / "spec.json").write_text(json.dumps(spec))
    return exp


def make_fleet(cluster: ClusterConfig, deadline_s: float, campaign_dir: str) -> Fleet:
    """The fleet a start would build for `cluster`, its checks made (the tests' one-call form)."""
    return build_fleet(plan_fleet(cluster), deadline_s, campaign_dir)


def compose_config(*overrides: str) -> AutoresearchConfig:
    """A config composed in-process as the CLI would, the test campaigns (toy, ...) included."""
    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"hydra.searchpath=[file://{FIXTURE_CONF}]", *overrides])
    return OmegaConf.to_object(cfg)  # type: ignore[return-value]


def compose_toy(runs_dir: Path, *overrides: str) -> AutoresearchConfig:
    """The toy campaign's config, on CPU slots whatever GPUs the machine has."""
    return compose_config("+campaign=toy", f"runs_dir={runs_dir}", "cluster.devices=cpu", *overrides)


def campaign_command(runs_dir: Path, *overrides: str) -> list[str]:
    campaign = [] if any(o.startswith("+campaign=") for o in overrides) else ["+campaign=toy"]
    return [
        sys.executable,
        "-m",
        "autoresearch",
        f"--config-dir={FIXTURE_CONF}",
        *campaign,
        f"runs_dir={runs_dir}",
        "cluster.devices=cpu",  # CPU slots whatever GPUs the machine has (a test may say otherwise)
        "cluster.poll_seconds=0.05",
        "cluster.grace_seconds=20",
        *overrides,
    ]


def run_campaign(
    runs_dir: Path,
    *overrides: str,
    env: dict[str, str] | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.CompletedProcess:
    """The campaign's command run to its end (`preexec_fn`: run in the controller's process first)."""
    return subprocess.run(
        campaign_command(runs_dir, *overrides),
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=preexec_fn,
    )


def load(campaign_dir: Path) -> optuna.Study:
    return optuna.load_study(
        study_name=campaign_dir.name,
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(campaign_dir / "study.journal"))
        ),
    )


def read_tsv(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f, delimiter="\t"))


def experiment_runs(run_log: Path) -> Counter[str]:
    """How often each workspace's train.py started (the toy trainer's TOY_RUN_LOG)."""
    return Counter(run_log.read_text().split()) if run_log.exists() else Counter()


class CountingOffline(OfflineProposer):
    """The real offline proposer (Claude's fallback), keeping the waves it was asked for."""

    def __init__(self) -> None:
        super().__init__(seed=0)
        self.waves: list[Wave] = []

    def propose(self, context: CampaignContext) -> Wave:
        self.waves.append(super().propose(context))
        return self.waves[-1]


class ScriptedProposer(Proposer):
    """Proposes one fixed wave, then nothing: the campaign ends when the queue is done."""

    def __init__(self, candidates: list[Candidate]) -> None:
        self.candidates = candidates

    def propose(self, context: CampaignContext) -> Wave:
        wave, self.candidates = self.candidates, []
        return Wave(candidates=wave, source="script")


class TwoLocalPools:
    """This machine as two partitions of one slot, screen and validate (the local fleet has one):
    for what a campaign does only when it validates on hardware of its own."""

    def __init__(self, deadline_s: float) -> None:
        self.parts = {
            name: LocalFleet(Pool(name, 1, "cpu", 0.0, name), [], 1, deadline_s) for name in ("local", "big")
        }
        self.pools = {name: fleet.pools[name] for name, fleet in self.parts.items()}

    def free_slots(self, pool: str) -> int:
        return self.parts[pool].free_slots(pool)

    def submit(self, jobs: list[JobSpec]) -> dict[int, str]:
        return {trial: handle for job in jobs for trial, handle in self.parts[job.pool].submit([job]).items()}

    def reattach(self, job: JobSpec, handle: str) -> bool:
        return self.parts[job.pool].reattach(job, handle)

    def note_node(self, pool: str, outcome: dict[str, Any]) -> None:
        pass

    def poll(self) -> list[Finished]:
        return [done for fleet in self.parts.values() for done in fleet.poll()]

    def wait(self, seconds: float) -> None:
        self.parts["local"].wait(seconds)

    def running(self) -> int:
        return sum(fleet.running() for fleet in self.parts.values())

    def shutdown(self, cancel: bool) -> None:
        for fleet in self.parts.values():
            fleet.shutdown(cancel)


def scripted_campaign(
    tmp_path: Path, candidates: list[Candidate], *overrides: str, validate_apart: bool = False
) -> Campaign:
    """The toy campaign in this process, on these candidates alone (no inner-sampler fill), not
    yet run; `validate_apart`: its validate tier on a partition of its own (`TwoLocalPools`)."""
    if validate_apart:
        overrides = (*overrides, "cluster.tiers.validate=big")
    cfg = compose_toy(tmp_path, "cluster.poll_seconds=0.02", "campaign.fill_idle_slots=false", *overrides)
    campaign_dir = campaign_dir_of(cfg)
    fleet: Fleet = (
        TwoLocalPools(deadline_seconds(cfg) + backstop_grace(cfg.cluster))
        if validate_apart
        else make_fleet(cfg.cluster, deadline_seconds(cfg), str(campaign_dir))
    )
    return Campaign(cfg, campaign_dir, fleet, ScriptedProposer(candidates), background_proposals=False)


def release(campaign: Campaign) -> None:
    """What a controller that ends lets go of, for a test that opened it by hand: its heartbeat
    thread and its lock (so another may open the campaign)."""
    campaign.heartbeat.stop("the test let it go")
    if campaign._lock_fd is not None:
        os.close(campaign._lock_fd)
        campaign._lock_fd = None


def fake_commands(folder: Path, shell: str = "/bin/sh", **bodies: str) -> Path:
    """A folder of stand-in commands (script bodies by name, e.g. Slurm's), to put first on PATH."""
    folder.mkdir(exist_ok=True)
    for name, body in bodies.items():
        (folder / name).write_text(f"#!{shell}\n{body}\n")
        (folder / name).chmod(0o755)
    return folder


def collect(campaign: Campaign, number: int, **attrs: Any) -> None:
    """A result for trial `number`, as the loop collects one: claimed, its figures set (on the
    frontier's head unless `parent` says otherwise), and up for a decision."""
    ledger = campaign.ledger
    assert ledger.claim(ledger.trial(number))
    ledger.set(number, {"parent": campaign.frontier.head(), **attrs})
    campaign.decisions.add(ledger.trial(number))


def queue_run(campaign: Campaign, **attrs: Any) -> int:
    """A run queued by hand with these user attributes; its trial number."""
    campaign.study.enqueue_trial({}, user_attrs=attrs)
    return campaign.ledger.waiting()[-1].number


INTAKE_NOW = 1234.5  # the clock of `open_intake`


def open_intake(tmp_path: Path, *overrides: str) -> Intake:
    """An intake as a controller opens one: on the campaign folder's study, new or resumed."""
    cfg = compose_toy(tmp_path, *overrides)
    campaign_dir = tmp_path / "campaign"
    (campaign_dir / "proposals").mkdir(parents=True, exist_ok=True)
    sampler = AgentSampler(knob_specs(cfg), seed=0)
    study = open_study(campaign_dir, cfg.campaign.name, None, sampler)
    frontier = Frontier(campaign_dir / "frontier", (TOY / "train.py").read_text())
    ledger = Ledger(study, lambda: INTAKE_NOW, lambda: None)
    pools = {"local": Pool("local", 2, "cpu")}
    return Intake(cfg, campaign_dir, ledger, sampler, frontier, pools, lambda: INTAKE_NOW)


def run_scripted(
    tmp_path: Path, candidates: list[Candidate], *overrides: str, validate_apart: bool = False
) -> Campaign:
    """`scripted_campaign`, run to its end."""
    campaign = scripted_campaign(tmp_path, candidates, *overrides, validate_apart=validate_apart)
    campaign.run()
    return campaign


class Killed(BaseException):
    """The controller dying at a chosen line (not an Exception: nothing may catch it)."""


def killed_and_resumed(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    changes: list[Candidate],
    dies_at: Callable[[Candidate, dict], bool],
    before: bool = False,
    overrides: tuple[str, ...] = (),
    resumed_with: tuple[str, ...] = (),
    validate_apart: bool = False,
) -> Campaign:
    """A campaign on `changes` whose controller dies when it queues the run `dies_at` picks
    (before or after queueing it); then a new controller (`resumed_with` more overrides) finishes it."""
    queue = Intake.add

    def add_then_die(self: Intake, cand: Candidate, attrs: dict) -> None:
        if before and dies_at(cand, attrs):
            raise Killed
        queue(self, cand, attrs)
        if dies_at(cand, attrs):
            raise Killed

    monkeypatch.setattr(Intake, "add", add_then_die)
    dying = scripted_campaign(tmp_path, changes, *overrides, validate_apart=validate_apart)
    with pytest.raises(Killed):
        dying.run()
    monkeypatch.undo()
    if dying._lock_fd is not None:  # a process that dies lets go of its lock (open() has no finally)
        os.close(dying._lock_fd)
    return run_scripted(tmp_path, [], *overrides, *resumed_with, validate_apart=validate_apart)


def trial_named(campaign: Campaign, description: str) -> FrozenTrial:
    """The first trial of a change, by its description."""
    return next(t for t in campaign.study.trials if t.user_attrs.get("description") == description)


def confirming(trials: list[FrozenTrial], number: int) -> list[FrozenTrial]:
    """The re-runs of trial `number` among `trials`, less its run as a new frontier at its screening
    seed (once kept)."""
    return [
        t for t in trials if t.user_attrs.get("validates") == number and not t.user_attrs.get("reference")
    ]


def launched_within_budget(study: optuna.Study, limit: int) -> list[optuna.trial.FrozenTrial]:
    """The launched trials, in launch order, checked against an experiments budget that ended the
    campaign: `limit` launches, then only the runs owed: re-runs of changes promoted before it, a
    baseline queued again for one that was cancelled, and experiments the cluster lost run again."""
    # (a controller killed while preparing a workspace can leave exp_dir set before launched_at)
    launched = sorted(
        (t for t in study.trials if "exp_dir" in t.user_attrs),
        key=lambda t: t.user_attrs.get("launched_at", 0.0),
    )
    assert len(launched) >= limit, f"{len(launched)} launched, the budget allowed {limit}"
    cancelled = {
        (t.user_attrs["tier"], t.user_attrs["seed"])
        for t in study.trials
        if t.user_attrs.get("kind") == "baseline" and t.user_attrs.get("status") == "cancelled"
    }
    late = [
        t.user_attrs["kind"]
        for t in launched[limit:]
        if "retry_of" not in t.user_attrs
        and (
            t.user_attrs["kind"] != "baseline"
            or (t.user_attrs["tier"], t.user_attrs["seed"]) not in cancelled
        )
    ]
    assert all(kind == "validation" for kind in late), late
    return launched


def controller_killed_mid_run(tmp_path: Path) -> tuple[Path, Path]:
    """A toy campaign on one slot whose controller was killed (kill -9) while its first run ran,
    held: that run's started.json, and the file that holds it (remove it and the run goes on)."""
    hold = tmp_path / "hold"  # (the toy's runs wait while it exists)
    hold.touch()
    runs = tmp_path / "runs"
    command = campaign_command(runs, "campaign.budget.max_experiments=4", "cluster.partitions.local.slots=1")
    killed_once_a_run_started(command, runs, {"TOY_HOLD": str(hold)})
    (started,) = runs.glob("toy/experiments/*/started.json")  # (one slot)
    return started, hold


def collected_once(resumed: subprocess.CompletedProcess, exp: Path, run_log: Path) -> None:
    """`resumed`, the campaign of `controller_killed_mid_run` started again once its held run `exp`
    ended, collected that run's result (no retry of it) and ran each of the rest once."""
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    study = load(exp.parents[1])
    collected = study.trials[int(exp.name)]
    assert collected.state == TrialState.COMPLETE and collected.user_attrs["status"] == "baseline"
    assert not [t for t in study.trials if t.user_attrs.get("retry_of") == collected.number]
    ran = experiment_runs(run_log)
    assert str(exp) not in ran and ran and set(ran.values()) == {1}, ran


def killed_once_a_run_started(command: list[str], runs: Path, env: dict[str, str]) -> None:
    """The campaign `command` (into `runs`, `env` added), its controller killed (kill -9) once a run
    started: what it launched goes on."""
    controller = subprocess.Popen(
        command, cwd=REPO, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for(lambda: list(runs.glob("toy/experiments/*/started.json")), 120, "a run started")
    finally:
        controller.kill()
        controller.wait(timeout=60)


def wait_for(condition: Callable[[], object], timeout: float, what: str, every: float = 0.1) -> None:
    """Poll `condition` until it holds: for waiting on other processes, never as a fixed sleep."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def autoresearch_into_closed_pipe(args: list[str]) -> subprocess.CompletedProcess[str]:
    """`python -m autoresearch ARGS` with its output piped to a reader that has already gone
    (`... | head` once head has had enough): every write it makes breaks the pipe."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [sys.executable, "-m", "autoresearch", *args],
            cwd=REPO,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)


def add_run(study: optuna.Study, value: float | None, launched: float, seconds: float, **attrs: Any) -> None:
    """A finished trial as the campaign records it: times, pool, status, and (if it ran) a value."""
    attrs = {
        "exp_dir": f"experiments/{len(study.trials):05d}",
        "pool": "local",
        "gpu_type": "cpu",
        "launched_at": launched,
        "started_at": launched + 1,
        "ended_at": launched + 1 + seconds,
        **attrs,
    }
    state = TrialState.FAIL if value is None else TrialState.COMPLETE
    study.add_trial(
        create_trial(
            state=state,
            value=value,
            user_attrs=attrs,
            params={"LR": 0.01},
            distributions={"LR": FloatDistribution(0.001, 0.5, log=True)},
        )
    )


def lucky_seeds_study(folder: Path) -> optuna.Study:
    """A study in `folder` whose baseline (2.0) ran at seeds 42-45 and whose change kept at seed 42
    (1.97) was re-run at 43-45 and 1042, with a seed's luck larger than the change: the plain
    means (1.990 -> 1.9825) show a quarter of the -0.03 the keep was decided on seed for seed."""
    journal = optuna.storages.journal.JournalFileBackend(str(folder / "study.journal"))
    study = optuna.create_study(study_name="toy", storage=optuna.storages.JournalStorage(journal))
    luck = {42: -0.04, 43: 0.0, 44: 0.01, 45: -0.01, 1042: 0.05}
    for seed in (42, 43, 44, 45):
        add_run(study, 2.0 + luck[seed], 0.0, 60.0, status="baseline", tier="screen", run_key="v0", seed=seed)
    kept = {"tier": "screen", "run_key": "v1", "description": "wider MLP"}
    add_run(study, 1.97 + luck[42], 70.0, 60.0, status="keep", seed=42, **kept)
    for seed in (43, 44, 45, 1042):
        add_run(study, 1.97 + luck[seed], 140.0, 60.0, status="rerun", seed=seed, validates=4, **kept)
    return study


def state_of(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


FREEZER = Path("/sys/fs/cgroup/freezer")  # cgroup v1's freezer: a frozen process is in D, KILL pending


@contextlib.contextmanager
def freezer_cgroup() -> Iterator[Path]:
    """A freezer cgroup of the test's own: at the end thawed, its processes KILLed and gone."""
    (group := FREEZER / f"autoresearch-test-{os.getpid()}").mkdir()
    try:
        yield group
    finally:
        (group / "freezer.state").write_text("THAWED")
        for pid in (group / "cgroup.procs").read_text().split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        wait_for(lambda: not (group / "cgroup.procs").read_text(), 60, "the freezer cgroup to empty")
        group.rmdir()


def frozen(group: Path, pid_file: Path) -> int:
    """The process whose pid `pid_file` will name, once it is frozen in `group` (in D)."""
    wait_for(pid_file.exists, 60, "the process to start", every=0.02)
    (group / "cgroup.procs").write_text(pid_file.read_text())
    (group / "freezer.state").write_text("FROZEN")
    wait_for(lambda: state_of(int(pid_file.read_text())) == "D", 60, "the process to be frozen", every=0.02)
    return int(pid_file.read_text())
