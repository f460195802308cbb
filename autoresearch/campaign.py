"""The campaign loop: propose, queue, launch, collect, decide; until a budget ends it.

Everything the loop knows is read back from the study, so a controller killed at any point and
started again with the same command carries on: queued proposals are WAITING trials, launched
experiments are RUNNING trials with a job handle, and decisions are made once, before `tell`.
The loop never sleeps or reads a wall clock itself: the fleet waits and the clock tells the time,
so the simulator can drive this same code on a virtual clock.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import optuna
from optuna.trial import FrozenTrial, TrialState

from autoresearch import budget as budgets
from autoresearch.config import AutoresearchConfig, time_budget_seconds
from autoresearch.fleet.base import Finished, Fleet, JobSpec
from autoresearch.frontier import Frontier
from autoresearch.knobs import read_knobs
from autoresearch.plot import plot_progress
from autoresearch.policy import NoiseAwarePolicy, Policy
from autoresearch.proposals import Candidate, Wave, candidate_from_dict, candidate_to_dict
from autoresearch.proposers.base import CampaignContext, ExperimentRecord, KnobSpec, Proposer
from autoresearch.pump import BackgroundPump, SyncPump
from autoresearch.report import REPORT_FILE, write_report
from autoresearch.results import frontier_runs, frontier_value, measurements, rows, tier_noise, write_results
from autoresearch.runner import INFRA_STATUSES, OUTCOME_FILE, SPEC_FILE, read_json, write_json_atomic
from autoresearch.sampler import AgentSampler, candidate_key
from autoresearch.study import finished, open_study, set_trial_attrs, trials
from autoresearch.tracking import NoTracker, Tracker
from autoresearch.workspace import (
    InvalidCandidate,
    build_source,
    create_workspace,
    experiment_dir,
    source_version,
)

log = logging.getLogger("autoresearch")

BASE_SEED = 42
RECORD_STATUS = {TrialState.FAIL: "crash", TrialState.RUNNING: "running", TrialState.WAITING: "queued"}
MAX_STACK_DEPTH = 2
MAX_REJECTIONS_SHOWN = 20
MAX_EMPTY_WAVES = 3
MAX_REDUNDANT_EXPLORATIONS = 20  # per launch round: the inner sampler keeps finding nothing new
MEASUREMENT_KINDS = ("baseline", "validation")  # runs of an existing train.py that decisions wait for


class Clock(Protocol):
    def now(self) -> float: ...


class WallClock:
    def now(self) -> float:
        import time

        return time.time()


class CampaignError(RuntimeError):
    """A campaign that cannot start or go on; the message says why in one line."""


class CampaignLocked(CampaignError):
    """Another controller is running this campaign."""


@dataclass
class Summary:
    experiments: int
    kept: int
    crashed: int
    baseline: float | None
    best: float | None
    stop_reason: str
    kept_descriptions: list[str] = field(default_factory=list)


def deadline_seconds(cfg: AutoresearchConfig) -> float:
    """The hard limit on one experiment: twice its budget plus start-up and evaluation grace."""
    return 2 * time_budget_seconds(cfg) + cfg.cluster.grace_seconds


def knob_specs(cfg: AutoresearchConfig) -> list[KnobSpec]:
    return [
        KnobSpec(name, k.kind, k.low, k.high, k.log, tuple(k.choices))
        for name, k in cfg.campaign.knobs.items()
    ]


class Campaign:
    def __init__(
        self,
        cfg: AutoresearchConfig,
        campaign_dir: Path,
        fleet: Fleet,
        proposer: Proposer,
        clock: Clock | None = None,
        policy: Policy | None = None,
        background_proposals: bool = True,
        tracker: Tracker | None = None,
    ) -> None:
        self.cfg = cfg
        self.c = cfg.campaign
        self.dir = campaign_dir
        self.fleet = fleet
        self.proposer = proposer
        self.clock = clock or WallClock()
        self.policy = policy or NoiseAwarePolicy(self.c.min_delta, self.c.promote_z, self.c.keep_z)
        self.tracker = tracker or NoTracker()
        self.pump = BackgroundPump(proposer) if background_proposals else SyncPump(proposer)
        self.knobs = knob_specs(cfg)
        self.sampler = AgentSampler(self.knobs, seed=self.c.seed)
        self.stop_requested = False
        self._pending: dict[int, tuple[str, str]] = {}  # results not yet decided: (kind, tier)
        self._rejected: list[str] = []
        self._empty_waves = 0  # consecutive waves with nothing new in them
        self._lock_fd: int | None = None
        self._baseline_measured = False  # a screen baseline has succeeded: the start is sound
        self._baselines_settled = False  # no baseline left to run (see _tiers_awaiting_baseline)
        self._judged_cache: dict[str, tuple[list[float], float | None]] | None = None  # see _judged
        self._records: dict[int, ExperimentRecord] = {}  # of finished trials, which no longer change

    # -- set-up ------------------------------------------------------------------------------
    def open(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "experiments").mkdir(exist_ok=True)
        (self.dir / "proposals").mkdir(exist_ok=True)
        self._lock()
        if shutil.which("git") is None:
            raise CampaignError(
                "git is not on PATH: the frontier (kept changes) is a git lineage; install git"
            )
        self.harness = Path(self.c.prepare_py).resolve()  # config_check saw it and train.py exist
        self.study = open_study(self.dir, self.c.name, self.cfg.storage, self.sampler)
        if "started_at" not in self.study.user_attrs:
            self.study.set_user_attr("started_at", self.clock.now())
        self.frontier = Frontier(self.dir / "frontier", Path(self.c.train_py).read_text())
        if self.c.prepare_data:
            self._prepare_data()
        self._reconcile()
        self._enqueue_baselines()  # at the start, or those a controller killed while queueing them missed

    def _prepare_data(self) -> None:
        """Download data and train the tokenizer once, here, rather than in every experiment."""
        log.info(
            "preparing %s data and tokenizer for the %s scale (cached after the first run)",
            self.c.data,
            self.c.scale,
        )
        env = {**os.environ, **self._harness_env(BASE_SEED)}
        cmd = [sys.executable, str(self.harness), "--scale", self.c.scale, "--data", self.c.data]
        if subprocess.run(cmd, env=env).returncode != 0:
            raise CampaignError(f"data preparation failed (see above): {' '.join(cmd)}")

    def _lock(self) -> None:
        fd = os.open(self.dir / "controller.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(fd, 32, 0).decode().strip() or "?"
            os.close(fd)
            raise CampaignLocked(f"another controller (pid {other}) is running {self.dir}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def _separate_validate_tier(self) -> bool:
        tiers = self.cfg.cluster.tiers
        return (
            self.c.validate_seeds > 0
            and tiers.get("validate") in self.fleet.pools
            and tiers.get("validate") != tiers.get("screen")
        )

    def _confirm_tier(self) -> str | None:
        """Where promoted changes are confirmed: the validate tier's own hardware if it has any,
        else the screen tier; None when `validate_seeds` is 0 (screen winners are kept at once)."""
        if self.c.validate_seeds <= 0:
            return None
        return "validate" if self._separate_validate_tier() else "screen"

    def _enqueue_baselines(self) -> None:
        """The starting point on the screen tier, and on the validate tier when it is other hardware."""
        queued = [t for t in trials(self.study) if t.user_attrs.get("kind") == "baseline"]
        attrs = {"kind": "baseline"}
        self._enqueue_repeats("screen", max(1, self.c.baseline_seeds), "baseline", attrs, queued)
        if self._separate_validate_tier():
            self._enqueue_repeats("validate", self.c.validate_seeds, "baseline", attrs, queued)

    def _enqueue_reruns(
        self, trial: int, tier: str, seeds: int, description: str, queued: list[FrozenTrial]
    ) -> bool:
        """Trial `trial`'s exact train.py again, with fresh seeds, on `tier` (before new proposals)."""
        attrs = {"kind": "validation", "validates": trial}
        return self._enqueue_repeats(tier, seeds, f"re-run trial {trial}: {description}", attrs, queued, 1)

    def _enqueue_repeats(
        self,
        tier: str,
        seeds: int,
        description: str,
        attrs: dict[str, Any],
        queued: list[FrozenTrial],
        first_seed: int = 0,
    ) -> bool:
        """`seeds` runs of one train.py on `tier`, seeds BASE_SEED + first_seed on: those not `queued`
        yet, so a controller killed part-way through queues the rest when it resumes. Says whether
        it queued any."""
        have = {(t.user_attrs.get("tier", "screen"), t.user_attrs.get("seed")) for t in queued}
        missing = [i for i in range(first_seed, first_seed + seeds) if (tier, BASE_SEED + i) not in have]
        for i in missing:
            cand = Candidate(description=description, hypothesis="measured again, unchanged", tier=tier)
            self._enqueue(cand, {**attrs, "seed": BASE_SEED + i, "wave": 0, "source": "engine"})
        return bool(missing)

    def _reconcile(self) -> None:
        """Trials a previous controller left RUNNING: re-attach, collect, or fail and re-queue."""
        for t in trials(self.study, TrialState.RUNNING):
            exp_dir = self._exp_dir(t.number)
            outcome = read_json(exp_dir / OUTCOME_FILE)
            if outcome is not None and outcome.get("status") not in INFRA_STATUSES:
                self._finish(Finished(t.number, outcome))
                continue
            # An interrupted run goes back to the fleet, which can tell a scancel from a preemption.
            handle = t.user_attrs.get("job", "")
            pool = t.user_attrs.get("pool", "")
            if "exp_dir" in t.user_attrs and self.fleet.reattach(JobSpec(t.number, exp_dir, pool), handle):
                log.info("trial %d: re-attached to %s", t.number, handle)
                continue
            if outcome is not None:
                self._finish(Finished(t.number, outcome))
                continue
            why = "job lost" if handle else "controller stopped before the experiment started"
            self._fail_and_requeue(t, {"status": "lost", "reason": why})

    # -- the loop ----------------------------------------------------------------------------
    def run(self) -> Summary:
        self.open()
        stop_reason = failure = ""
        try:
            while True:
                for done in self.fleet.poll():
                    self._finish(done)
                self._decide_pending()
                wave = self.pump.collect()
                if wave is not None:
                    self._enqueue_wave(wave)
                failure = self._broken_start()
                stop_reason = failure or self._stop_reason()
                if stop_reason:
                    if self.stop_requested:
                        break
                    self._launch(new=False)  # re-runs owed to a decision still run
                    if self.fleet.running() == 0 and not self._owed():
                        self._decide_pending(final=True)  # a baseline still queued will not run now
                        if not self._owed():  # else a last promotion's re-runs go first
                            break
                else:
                    self._maybe_request_wave()
                    self._launch()
                self.fleet.wait(self.cfg.cluster.poll_seconds)
        finally:
            self.pump.close()
            self.fleet.shutdown(cancel=False)
            self._write_outputs(final=True)
            self.tracker.update(self.study)
            self.tracker.close(self.dir / REPORT_FILE)
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
        if failure:
            raise CampaignError(failure)
        return self.summary(stop_reason)

    def _broken_start(self) -> str:
        """Why nothing can be judged: every baseline run of the starting train.py on the screen tier
        failed, and none is left to run. Checked until one succeeds, then never again."""
        if self._baseline_measured:
            return ""
        runs = [
            t
            for t in trials(self.study)
            if t.user_attrs.get("kind") == "baseline" and t.user_attrs.get("tier", "screen") == "screen"
        ]
        self._baseline_measured = any(t.state == TrialState.COMPLETE for t in runs)
        if not runs or any(t.state != TrialState.FAIL for t in runs):
            return ""
        first = runs[0]
        return (
            f"every baseline run of the starting train.py failed (trial {first.number}, "
            f"{first.user_attrs.get('reason') or first.user_attrs.get('status', 'failed')}); nothing can be "
            f"judged against it: fix the cause, then start over (a new campaign.name, or remove {self.dir})"
        )

    def _stop_reason(self) -> str:
        if self.stop_requested:
            return "stopped by the user"
        if self._empty_waves >= MAX_EMPTY_WAVES and not self._waiting():
            return f"the proposer had nothing new in {MAX_EMPTY_WAVES} waves in a row"
        spend = budgets.measure(self.study, self.fleet.pools, self.dir, self.clock.now())
        return budgets.exhausted(spend, self.c.budget) or ""

    def _waiting(self) -> list[FrozenTrial]:
        return trials(self.study, TrialState.WAITING)

    def _owed(self) -> list[FrozenTrial]:
        """Queued runs a decision waits for (baselines, re-runs): they go first, and still run
        after a budget stops new experiments, so no promoted change is left undecided."""
        return [t for t in self._waiting() if t.user_attrs.get("kind") in MEASUREMENT_KINDS]

    def _maybe_request_wave(self) -> None:
        if self.pump.busy:
            return
        waiting = len(self._waiting())
        if self.c.synchronous:
            if waiting == 0 and self.fleet.running() == 0 and not self._pending:
                self.pump.request(self.context())
            return
        low_water = self.c.queue_low_water or sum(p.slots for p in self.fleet.pools.values())
        if waiting < low_water:
            self.pump.request(self.context())

    # -- proposals into the queue ------------------------------------------------------------
    def _enqueue(self, cand: Candidate, attrs: dict[str, Any]) -> None:
        name = f"t{len(trials(self.study)):05d}-{cand.tier}.json"
        path = self.dir / "proposals" / name
        path.write_text(json.dumps(candidate_to_dict(cand), indent=1))
        self.sampler.enqueue(self.study, cand, self.frontier.head(), {"edit": f"proposals/{name}", **attrs})

    def _enqueue_wave(self, wave: Wave) -> None:
        number = 1 + max((t.user_attrs.get("wave", 0) for t in trials(self.study)), default=0)
        (self.dir / "proposals" / f"wave{number:04d}.json").write_text(
            json.dumps({"rationale": wave.rationale, "source": wave.source}, indent=1)
        )
        seen = {t.user_attrs.get("key") for t in trials(self.study)}
        head = self.frontier.head()
        accepted, dropped = wave.expand(seen, self.c.max_wave, key=lambda c: candidate_key(c, head))
        self._empty_waves = 0 if accepted else self._empty_waves + 1
        self._rejected.extend(dropped)
        for cand in accepted:
            reason = self._precheck(cand)
            attrs = {"kind": "experiment", "wave": number, "source": wave.source, "seed": BASE_SEED}
            if cand.fix_of is not None:
                attrs["fix_of"] = cand.fix_of
            if reason:
                self._record_invalid(cand, attrs, reason)
            else:
                self._enqueue(cand, attrs)
        log.info(
            "wave %d from %s: %d queued, %d dropped%s",
            number,
            wave.source,
            len(accepted),
            len(dropped),
            f" ({wave.rationale[:100]})" if wave.rationale else "",
        )

    def _precheck(self, cand: Candidate) -> str:
        """Why a candidate cannot run, or '' if it can: checked before it costs a slot."""
        if (
            cand.tier not in self.cfg.cluster.tiers
            or self.cfg.cluster.tiers[cand.tier] not in self.fleet.pools
        ):
            return f"tier {cand.tier!r} has no partition in this cluster"
        if cand.fix_of is not None:
            fixes = sum(1 for t in trials(self.study) if t.user_attrs.get("fix_of") == cand.fix_of)
            if fixes >= self.cfg.agent.max_fix_attempts:
                return f"trial {cand.fix_of} already had {fixes} fix attempts (limit {self.cfg.agent.max_fix_attempts})"
        try:
            build_source(
                self.frontier.source(), cand.edits, {k: v for k, v in cand.knobs.items() if v is not None}
            )
        except InvalidCandidate as err:
            return str(err)
        for name, value in cand.knobs.items():
            spec = next((k for k in self.knobs if k.name == name), None)
            if spec and spec.kind == "categorical" and value is not None and value not in spec.choices:
                return f"knob {name}: {value!r} is not one of its choices {list(spec.choices)}"
        return ""

    def _record_invalid(self, cand: Candidate, attrs: dict[str, Any], reason: str) -> None:
        """An invalid proposal becomes a FAIL trial with its reason; nothing runs."""
        now = self.clock.now()
        self.study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.FAIL,
                user_attrs={
                    **attrs,
                    "description": cand.description,
                    "hypothesis": cand.hypothesis,
                    "tier": cand.tier,
                    "key": candidate_key(cand, self.frontier.head()),
                    "status": "invalid",
                    "reason": reason,
                    "started_at": now,
                    "ended_at": now,
                },
            )
        )
        self._rejected.append(f"{cand.description}: {reason}")
        log.warning("rejected %r: %s", cand.description, reason)

    # -- launching ---------------------------------------------------------------------------
    def _launch(self, new: bool = True) -> None:
        """Fill free slots, each with work for its own partition: re-runs a decision waits for
        first, then the oldest proposal, then (with `new`) the inner sampler's; without `new` (the
        campaign is stopping) only the re-runs."""
        free = {name: self.fleet.free_slots(name) for name in self.fleet.pools}
        batches: dict[str, list[JobSpec]] = {name: [] for name in self.fleet.pools}
        redundant = 0
        while sum(free.values()) > 0 and (self._may_launch_more() if new else self._owed()):
            trial = self._ask(free, owed_only=not new)
            if trial is None:
                break  # nothing queued for a free partition, and nothing to explore there
            job = self._prepare_next(trial)
            if job is None:
                redundant += "edit" not in trial.user_attrs  # the inner sampler found nothing new
                if redundant >= MAX_REDUNDANT_EXPLORATIONS:
                    break  # leave the slot to the next wave
                continue
            batches[job.pool].append(job)
            free[job.pool] -= 1
        for jobs in batches.values():
            if jobs:
                handles = self.fleet.submit(jobs)
                for trial_number, handle in handles.items():
                    set_trial_attrs(self.study, trial_number, {"job": handle})

    def _redundant(self, number: int, source: str, frontier_source: str, run_key: str) -> str:
        """Why running this train.py would teach nothing new, or ''. Proposals made on an older
        frontier can turn into the frontier itself, or into a twin of another experiment."""
        if source == frontier_source:
            return "no change: already part of the frontier"
        for t in trials(self.study, TrialState.COMPLETE, TrialState.RUNNING):
            if t.number != number and t.user_attrs.get("run_key") == run_key:
                return f"same train.py as trial {t.number}"
        return ""

    def _may_launch_more(self) -> bool:
        limit = self.c.budget.max_experiments
        if not limit:
            return True
        launched = sum(1 for t in trials(self.study) if "exp_dir" in t.user_attrs)
        return launched < limit

    def _ask(self, free: dict[str, int], owed_only: bool = False) -> optuna.Trial | None:
        """Claim the next trial whose partition has a free slot: owed re-runs first, then queued
        proposals in order, else a new trial for the inner sampler; None if none fits now.
        (Optuna's own `ask` takes the oldest waiting trial, whichever partition it needs.)"""
        waiting = self._waiting()
        owed = [t for t in waiting if t.user_attrs.get("kind") in MEASUREMENT_KINDS]
        queue = (
            owed
            if owed_only
            else owed + [t for t in waiting if t.user_attrs.get("kind") not in MEASUREMENT_KINDS]
        )
        storage = self.study._storage
        for t in queue:
            pool = self.cfg.cluster.tiers.get(t.user_attrs.get("tier", "screen"), "")
            # (an unknown tier is claimed, and failed with its reason in _prepare_next)
            fits = free.get(pool, 1) > 0
            if fits and storage.set_trial_state_values(t._trial_id, state=TrialState.RUNNING):
                return optuna.Trial(self.study, t._trial_id)  # claimed, as Study.ask claims
        explore = self.c.fill_idle_slots and not self.c.synchronous and bool(self.knobs)
        if owed_only or not explore or free.get(self.cfg.cluster.tiers.get("screen", ""), 0) == 0:
            return None  # the proposer's next wave fills the slot (no knobs: nothing to explore)
        # A new trial for the inner sampler, on the screen tier (Study.ask would pop a queued one).
        return optuna.Trial(self.study, storage.create_new_trial(self.study._study_id))

    def _prepare_next(self, trial: optuna.Trial) -> JobSpec | None:
        """Build a claimed trial's workspace (a queued candidate's, or an exploration one's)."""
        attrs = trial.user_attrs
        cand = self._load_candidate(attrs)
        if "edit" not in attrs:
            attrs = {"kind": "exploration", "wave": 0, "source": "inner-sampler", "seed": BASE_SEED}
            set_trial_attrs(
                self.study, trial.number, {**attrs, "description": cand.description, "tier": cand.tier}
            )
        try:
            frontier_source = self.frontier.source()
            if attrs.get("kind") in MEASUREMENT_KINDS:
                source, knobs = self._measured_source(attrs)
            else:
                knobs = self.sampler.resolve_knobs(trial, cand)
                source = build_source(frontier_source, cand.edits, knobs)
            run_key = source_version(source)
            if attrs.get("kind") not in MEASUREMENT_KINDS:
                reason = self._redundant(trial.number, source, frontier_source, run_key)
                if reason:
                    # knobs and parent let proposers see it as tried on this frontier
                    tried = {"knobs": json.dumps(knobs, sort_keys=True), "parent": self.frontier.head()}
                    self._fail(trial.number, {**tried, "status": "skip", "reason": reason})
                    return None
        except (InvalidCandidate, ValueError) as err:
            self._fail(trial.number, {"status": "invalid", "reason": str(err)})
            self._rejected.append(f"{cand.description}: {err}")
            return None
        pool_name = self.cfg.cluster.tiers.get(cand.tier, "")
        if pool_name not in self.fleet.pools:
            self._fail(
                trial.number, {"status": "invalid", "reason": f"tier {cand.tier!r} has no partition now"}
            )
            return None
        pool = self.fleet.pools[pool_name]
        exp_dir = self._exp_dir(trial.number)
        workspace = create_workspace(exp_dir, frontier_source, source, self.harness)
        seed = int(attrs.get("seed", BASE_SEED))
        spec = {
            "trial": trial.number,
            "deadline_s": deadline_seconds(self.cfg),
            "harness_sha256": workspace.harness_sha256,
            "gpu_type": pool.gpu_type,
            "partition": pool.partition or pool.name,
            "env": self._harness_env(seed),
        }
        write_json_atomic(exp_dir / SPEC_FILE, spec)
        if attrs.get("kind") == "exploration":
            cand.knobs = knobs
            set_trial_attrs(self.study, trial.number, {"key": candidate_key(cand, self.frontier.head())})
        set_trial_attrs(
            self.study,
            trial.number,
            {
                "knobs": json.dumps(knobs, sort_keys=True),
                "run_key": run_key,
                "parent": self.frontier.head(),
                "exp_dir": str(exp_dir.relative_to(self.dir)),
                "pool": pool_name,
                "gpu_type": pool.gpu_type,
                "partition": pool.partition or pool.name,
                "launched_at": self.clock.now(),
            },
        )
        log.info("trial %d: launching on %s: %s", trial.number, pool_name, cand.description)
        return JobSpec(trial.number, exp_dir, pool_name)

    def _measured_source(self, attrs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """What a measurement runs: exactly the train.py of the trial it re-runs, or the start."""
        if "validates" not in attrs:
            return self.frontier.start_source(), {}
        original = self._trial(int(attrs["validates"])).user_attrs
        source = (self.dir / original["exp_dir"] / "train.py").read_text()
        return source, json.loads(original.get("knobs", "{}"))

    def _harness_env(self, seed: int) -> dict[str, str]:
        env = {
            "AUTORESEARCH_SCALE": self.c.scale,
            "AUTORESEARCH_DATA": self.c.data,
            "AUTORESEARCH_SEED": str(seed),
        }
        if self.c.time_budget:
            env["AUTORESEARCH_TIME_BUDGET"] = str(self.c.time_budget)
        if os.environ.get("AUTORESEARCH_CACHE"):
            env["AUTORESEARCH_CACHE"] = os.environ["AUTORESEARCH_CACHE"]
        return env

    def _exp_dir(self, number: int) -> Path:
        return experiment_dir(self.dir, number)

    # -- results -----------------------------------------------------------------------------
    def _finish(self, done: Finished) -> None:
        trial = self._trial(done.trial)
        if trial.state != TrialState.RUNNING:
            return  # already told (a duplicate report)
        outcome = done.outcome
        status = outcome.get("status")
        attrs = {
            "node": outcome.get("node", ""),
            "gpus_seen": outcome.get("gpus_seen", ""),
            "started_at": outcome.get("started_at"),
            "ended_at": outcome.get("ended_at", self.clock.now()),
        }
        if outcome.get("slurm_job_id"):
            attrs["slurm_job_id"] = outcome["slurm_job_id"]
        if status in INFRA_STATUSES:
            self._fail_and_requeue(trial, outcome)
            return
        metrics = outcome.get("metrics") or {}
        val_bpb = metrics.get("val_bpb")
        if status != "ok" or not isinstance(val_bpb, int | float) or not math.isfinite(val_bpb):
            reason = outcome.get("reason") or f"val_bpb is {val_bpb!r}"
            failed = "cancelled" if status == "cancelled" else "crash"
            self._fail(trial.number, {**attrs, "status": failed, "reason": f"{status}: {reason}"})
            log.warning("trial %d: %s: %s", trial.number, status, reason)
            return
        attrs.update(
            val_bpb=float(val_bpb),
            memory_gb=round(float(metrics.get("peak_vram_mb", 0.0)) / 1024, 2),
            training_seconds=metrics.get("training_seconds"),
            mfu=metrics.get("mfu_percent"),
            num_steps=metrics.get("num_steps"),
            device=str(metrics.get("device", "")),
        )
        set_trial_attrs(self.study, trial.number, attrs)
        kind_and_tier = (trial.user_attrs.get("kind", ""), trial.user_attrs.get("tier", "screen"))
        self._pending[trial.number] = kind_and_tier  # decided with the others of this poll (`run`)

    def _judged(self) -> dict[str, tuple[list[float], float | None]]:
        """Per tier with a baseline: the frontier's runs there and the seed noise measured there.
        Cached until a measurement or a keep is told (nothing else moves them): rebuilding them
        from every result on every decision made the controller slower as a campaign grew."""
        if self._judged_cache is None:
            table = rows(self.study)
            tiers = {r["tier"] for r in table if r["status"] == "baseline"}
            self._judged_cache = {
                tier: (frontier_runs(table, tier), tier_noise(table, tier)) for tier in tiers
            }
        return self._judged_cache

    def _tiers_awaiting_baseline(self) -> set[str]:
        """Tiers with a baseline still to run. Once none is left, none comes back in this run
        (baselines are queued at the start, a lost one's retry before it is failed), so the scan
        of every active trial at every decision stops."""
        if self._baselines_settled:
            return set()
        active = trials(self.study, TrialState.RUNNING, TrialState.WAITING)
        awaiting = {
            t.user_attrs.get("tier", "screen")
            for t in active
            if t.user_attrs.get("kind") == "baseline" and t.number not in self._pending
        }
        self._baselines_settled = not awaiting
        return awaiting

    def _decide_pending(self, final: bool = False) -> None:
        """Decide results whose tier's baseline has landed (`final`: all of them, the campaign ends)."""
        # Measurements first: the decisions below compare against them.
        for number, (kind, _) in sorted(self._pending.items()):
            if kind in MEASUREMENT_KINDS:
                status = "baseline" if kind == "baseline" else "validated"
                self._complete(
                    number, self._trial(number).user_attrs["val_bpb"], {"status": status, "reason": ""}
                )
        if not self._pending:
            return
        awaiting = set() if final else self._tiers_awaiting_baseline()
        reruns: dict[int, list[FrozenTrial]] | None = None  # of each promoted trial, found once per pass
        for number, (_, tier) in sorted(self._pending.items()):
            if tier in awaiting:
                continue
            trial = self._trial(number)
            attrs = trial.user_attrs
            if tier not in self._judged():
                self._decide(trial, "discard", f"no baseline on the {tier} tier")
                continue
            kept_commit = self.frontier.commit_of_trial(number)
            if kept_commit:  # kept by a controller that died before telling the study
                self._decide(trial, "keep", "resumed", commit=kept_commit)
            elif attrs.get("promoted"):
                if reruns is None:
                    reruns = {}
                    for t in trials(self.study):
                        if "validates" in t.user_attrs:
                            reruns.setdefault(t.user_attrs["validates"], []).append(t)
                self._confirm(trial, reruns.get(number, []), final)
            else:
                self._screen(trial)

    def _screen(self, trial: FrozenTrial) -> None:
        """A new result against the frontier on its tier: discard it, or promote it to confirmation
        (kept at once when the campaign confirms nothing)."""
        tier = trial.user_attrs.get("tier", "screen")
        frontier, noise = self._judged()[tier]
        verdict = self.policy.screen(trial.user_attrs["val_bpb"], frontier, noise)
        confirm_tier = self._confirm_tier()
        if not verdict.better or self._stale(trial) or confirm_tier is None:
            self._decide(trial, "keep" if verdict.better else "discard", verdict.reason)
            return
        set_trial_attrs(self.study, trial.number, {"promoted": True, "reason": f"promoted: {verdict.reason}"})
        log.info(
            "trial %d: PROMOTE (%s) %s", trial.number, verdict.reason, trial.user_attrs.get("description")
        )
        self._confirm(self._trial(trial.number), [], final=False)

    def _confirm(self, trial: FrozenTrial, reruns: list[FrozenTrial], final: bool) -> None:
        """A promoted change: queue its re-runs (those missing, wherever the controller died), and
        when they are in, keep it if their mean beats the version it was built on. One overtaken by
        another keep meanwhile runs no more re-runs: it is stacked (re-screened on the new frontier)."""
        if not self._stale(trial):
            tier = reruns[0].user_attrs.get("tier", "screen") if reruns else self._confirm_tier()
            if tier is None:  # resumed with validate_seeds=0: its screening run decides alone
                self._decide(trial, "keep", trial.user_attrs.get("reason", ""))
                return
            description = trial.user_attrs.get("description", "")
            if self._enqueue_reruns(trial.number, tier, self.c.validate_seeds, description, reruns):
                return
        else:
            for t in reruns:
                if t.state == TrialState.WAITING:
                    self._drop(t, f"trial {trial.number} was overtaken by a keep: stacked instead")
            reruns = [self._trial(t.number) for t in reruns]
        if not final and any(not t.state.is_finished() for t in reruns):
            return
        if any(t.user_attrs.get("status") == "crash" for t in reruns):
            self._decide(trial, "discard", "not confirmed: it crashed when run again with another seed")
            return
        values = [float(t.value) for t in reruns if t.state == TrialState.COMPLETE]
        if not values:
            stale = self._stale(trial)
            why = "overtaken by a keep before its re-runs ran" if stale else "none of its re-runs finished"
            self._decide(trial, "keep" if stale else "discard", f"not confirmed: {why}")
            return
        tier = reruns[0].user_attrs.get("tier", "screen")
        verdict = self.policy.confirm(values, self._parent_runs(trial, tier), self._judged()[tier][1])
        prefix = "confirmed" if verdict.better else "not confirmed"
        self._decide(trial, "keep" if verdict.better else "discard", f"{prefix}: {verdict.reason}")

    def _parent_runs(self, trial: FrozenTrial, tier: str) -> list[float]:
        """The runs of the version a trial was built on, on a tier (else the frontier's there)."""
        parent = trial.user_attrs.get("parent", "")
        version = source_version(self.frontier.source_at(parent)) if parent else ""
        return measurements(rows(self.study), version, tier) or self._judged()[tier][0]

    def _drop(self, trial: FrozenTrial, reason: str) -> None:
        """A queued run no longer needed: claimed and failed as skipped, with the reason."""
        if self.study._storage.set_trial_state_values(trial._trial_id, state=TrialState.RUNNING):
            self._fail(trial.number, {"status": "skip", "reason": reason})

    def _stale(self, trial: FrozenTrial) -> bool:
        return trial.user_attrs.get("parent", "") != self.frontier.head()

    def _decide(self, trial: FrozenTrial, status: str, reason: str, commit: str = "") -> None:
        """Tell the study: keep (the frontier advances), discard, or re-run a winner that was
        built on an older frontier on top of the current one (stacked) rather than keep it unmeasured."""
        attrs = trial.user_attrs
        number, val_bpb = trial.number, attrs["val_bpb"]
        tier = attrs.get("tier", "screen")
        extra: dict[str, Any] = {"status": status, "reason": reason}
        if tier in self._judged():
            extra["delta"] = val_bpb - statistics.fmean(self._judged()[tier][0])
        if status == "keep" and not commit and self._stale(trial):
            extra.update(status="discard", reason=self._stack(trial, f"{reason}; built on an older frontier"))
            log.info("trial %d: %s", number, extra["reason"])
        elif status == "keep":
            if not commit:
                source = (self._exp_dir(number) / "train.py").read_text()
                commit = self.frontier.advance(source, number, attrs.get("description", ""))
            if self._confirm_tier() != "screen":  # its screen value rests on one lucky run
                queued = self._queued_for("validates", number)
                self._enqueue_reruns(
                    number, "screen", max(1, self.c.baseline_seeds), "the new frontier", queued
                )
            extra["commit"] = commit
            log.info("trial %d: KEEP %.6f (%s) %s", number, val_bpb, reason, attrs.get("description"))
        else:
            log.info("trial %d: discard %.6f (%s)", number, val_bpb, reason)
        self._complete(number, val_bpb, extra)

    def _stack(self, trial: FrozenTrial, reason: str) -> str:
        depth = int(trial.user_attrs.get("stack_depth", 0))
        if depth >= MAX_STACK_DEPTH:
            return f"{reason}; not re-run (stacked {depth} times already)"
        cand = self._candidate_of(trial)
        cand.description = (
            cand.description if cand.description.startswith("stack: ") else f"stack: {cand.description}"
        )
        attrs = {
            "kind": "stack",
            "wave": trial.user_attrs.get("wave", 0),
            "source": trial.user_attrs.get("source", ""),
            "seed": BASE_SEED,
            "stack_of": trial.number,
            "stack_depth": depth + 1,
        }
        if self._precheck(cand):
            return f"{reason}; its change no longer applies to the current frontier"
        if not self._queued_for("stack_of", trial.number):  # else queued before a controller died
            self._enqueue(cand, attrs)
        return f"{reason}; re-queued on the current frontier"

    def _queued_for(self, attr: str, number: int) -> list[FrozenTrial]:
        """The trials queued on trial `number`'s account (`validates`, `stack_of`, `retry_of`):
        a controller killed between queueing them and telling the study queues them only once."""
        return [t for t in trials(self.study) if t.user_attrs.get(attr) == number]

    def _candidate_of(self, trial: FrozenTrial) -> Candidate:
        """The trial's candidate with its knobs as they ran (free ones resolved)."""
        attrs = trial.user_attrs
        cand = self._load_candidate(attrs)
        if "edit" not in attrs:
            cand.description = attrs.get("description", cand.description)
        cand.knobs.update(json.loads(attrs.get("knobs", "{}")))
        return cand

    def _load_candidate(self, attrs: dict[str, Any]) -> Candidate:
        """The proposed candidate a trial points to, or a fresh exploration one when it has none."""
        if "edit" in attrs:
            return candidate_from_dict(json.loads((self.dir / attrs["edit"]).read_text()))
        return self.sampler.exploration_candidate()

    def _trial(self, number: int) -> FrozenTrial:
        storage = self.study._storage
        return storage.get_trial(
            storage.get_trial_id_from_study_id_trial_number(self.study._study_id, number)
        )

    def _complete(self, number: int, value: float, attrs: dict[str, Any]) -> None:
        set_trial_attrs(self.study, number, attrs)
        self.study.tell(number, value)
        if attrs.get("status") in ("baseline", "validated", "keep"):
            self._judged_cache = None
        self._pending.pop(number, None)
        self._after_tell()

    def _fail(self, number: int, attrs: dict[str, Any]) -> None:
        attrs.setdefault("ended_at", self.clock.now())
        set_trial_attrs(self.study, number, attrs)
        self.study.tell(number, state=TrialState.FAIL)
        self._after_tell()

    def _fail_and_requeue(self, trial: FrozenTrial, outcome: dict[str, Any]) -> None:
        """Lost to infrastructure, not to its own fault: fail it with the reason and run it again."""
        retries = int(trial.user_attrs.get("retries", 0))
        reason = f"{outcome.get('status')}: {outcome.get('reason', '')}"
        if retries < self.c.max_retries and trial.user_attrs.get("kind") != "exploration":
            if not self._queued_for("retry_of", trial.number):  # else queued before a controller died
                cand = self._candidate_of(trial)
                keep = {
                    k: v
                    for k, v in trial.user_attrs.items()
                    if k in ("kind", "wave", "source", "seed", "fix_of", "validates")
                }
                self._enqueue(cand, {**keep, "retry_of": trial.number, "retries": retries + 1})
            reason += "; re-queued"
        log.warning("trial %d: %s", trial.number, reason)
        self._fail(trial.number, {"status": "lost", "reason": reason})

    def _after_tell(self) -> None:
        self.tracker.update(self.study)
        done = len(finished(self.study))
        if done % max(1, self.cfg.tracking.plot_every) == 0:
            self._write_outputs()

    def _write_outputs(self, final: bool = False) -> None:
        table = write_results(self.study, self.dir / "results.tsv")
        if final:
            write_report(self.study, self.dir, self.cfg)  # re-draws progress.png as well
        elif table:
            plot_progress(table, self.dir / "progress.png", self.c.name)

    # -- what proposers see ------------------------------------------------------------------
    def context(self) -> CampaignContext:
        history = [self._record(t) for t in sorted(finished(self.study), key=lambda t: t.number)]
        in_flight = trials(self.study, TrialState.RUNNING, TrialState.WAITING)
        history += [self._record(t) for t in sorted(in_flight, key=lambda t: t.number)]
        judged = self._judged()
        spend = budgets.measure(self.study, self.fleet.pools, self.dir, self.clock.now())
        source = self.frontier.source()
        tiers = {}
        for tier, pool_name in self.cfg.cluster.tiers.items():
            pool = self.fleet.pools.get(pool_name)
            if pool:
                tiers[tier] = f"{pool.gpu_type} x{pool.slots} ({pool.partition or pool.name})"
        return CampaignContext(
            frontier_source=source,
            frontier_val_bpb={tier: statistics.fmean(runs) for tier, (runs, _) in judged.items()},
            lineage=[r for r in history if r.status == "keep"],
            history=history,
            knobs=self.knobs,
            knob_values=read_knobs(source),
            noise_std=judged["screen"][1] if "screen" in judged else None,
            budget_left=budgets.remaining(spend, self.c.budget),
            tiers=tiers,
            wave_size=self.c.wave_size,
            rejected=self._rejected[-MAX_REJECTIONS_SHOWN:],
            campaign_dir=str(self.dir),
            frontier_commit=self.frontier.head(),
            harness={
                "scale": self.c.scale,
                "data": self.c.data,
                "time_budget_seconds": f"{time_budget_seconds(self.cfg):g}",
                "metric": "val_bpb on the held-out split, computed by prepare.py from the model's logits",
            },
        )

    def _record(self, t: FrozenTrial) -> ExperimentRecord:
        if t.number in self._records:
            return self._records[t.number]
        attrs = t.user_attrs
        record = ExperimentRecord(
            number=t.number,
            description=attrs.get("description", ""),
            status=attrs.get("status")
            or ("confirming" if attrs.get("promoted") else RECORD_STATUS.get(t.state, "discard")),
            val_bpb=t.value if t.state == TrialState.COMPLETE else attrs.get("val_bpb"),  # run, not decided
            tier=attrs.get("tier", "screen"),
            knobs=json.loads(attrs.get("knobs", "{}")),
            reason=attrs.get("reason", ""),
            source=attrs.get("source", ""),
            parent=attrs.get("parent", ""),
            delta=attrs.get("delta"),
        )
        if t.state.is_finished():
            self._records[t.number] = record
        return record

    def summary(self, stop_reason: str) -> Summary:
        done = finished(self.study)
        kept = sorted((t for t in done if t.user_attrs.get("status") == "keep"), key=lambda t: t.number)
        baseline, best = frontier_value(rows(self.study))  # screen tier: one kind of hardware, as `status`
        return Summary(
            experiments=sum(1 for t in done if "exp_dir" in t.user_attrs),
            kept=len(kept),
            crashed=sum(1 for t in done if t.user_attrs.get("status") == "crash"),
            baseline=baseline,
            best=best,
            stop_reason=stop_reason,
            kept_descriptions=[f"trial {t.number}: {t.user_attrs.get('description', '')}" for t in kept],
        )
