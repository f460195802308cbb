"""Filling free slots, each with work for its own partition, in the order decisions need it.

A slot takes the next WAITING trial that fits its partition (re-runs a decision waits for first,
then proposals in the order they came), else a new trial for the inner sampler. Its workspace and
spec are written, where it runs is recorded on the trial, and each partition's jobs go out as one
submission (one sbatch array on Slurm).
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from autoresearch.budget import PRICE_ATTR
from autoresearch.config import AutoresearchConfig, deadline_seconds
from autoresearch.files import write_json_atomic
from autoresearch.fleet.base import Fleet, JobSpec
from autoresearch.frontier import Frontier
from autoresearch.hardware import HARDWARE_ATTR, hardware_of
from autoresearch.intake import BASE_SEED, Intake, screening_seed
from autoresearch.ledger import MEASUREMENT_KINDS, Ledger
from autoresearch.runner import SPEC_FILE
from autoresearch.sampler import AgentSampler, candidate_key
from autoresearch.workspace import (
    InvalidCandidate,
    InvalidOnAnyFrontier,
    build_source,
    create_workspace,
    experiment_dir,
    source_version,
)

log = logging.getLogger("autoresearch")

# In a row on one frontier: the inner sampler finds nothing there it can run (every draw a twin of
# a run in a small knob space, or a knob the frontier cannot set), so it stops until a keep.
MAX_DEAD_EXPLORATIONS = 20


def harness_env(cfg: AutoresearchConfig, seed: int) -> dict[str, str]:
    """What the harness reads from its environment: the scale, data, seed and training budget, and
    the controller's data cache as an absolute path. A relative one (or one with a ~ the shell did
    not expand) named another folder in each experiment's, where train.py runs: climbmix runs all
    crashed on "no train data", offline ones each built a cache of their own."""
    c = cfg.campaign
    env = {"AUTORESEARCH_SCALE": c.scale, "AUTORESEARCH_DATA": c.data, "AUTORESEARCH_SEED": str(seed)}
    if c.time_budget:
        env["AUTORESEARCH_TIME_BUDGET"] = str(c.time_budget)
    if os.environ.get("AUTORESEARCH_CACHE"):
        env["AUTORESEARCH_CACHE"] = str(Path(os.environ["AUTORESEARCH_CACHE"]).expanduser().absolute())
    return env


def data_step(cfg: AutoresearchConfig, harness: Path) -> tuple[list[str], dict[str, str]]:
    """The command and environment of a campaign's data step, `harness`'s download and tokenizer
    training: one for the start, which runs it, and `autoresearch check`, which asks it (--check)
    what it would do, in this interpreter and environment, as the start would."""
    c = cfg.campaign
    command = [sys.executable, str(harness), "--scale", c.scale, "--data", c.data]
    return command, {**os.environ, **harness_env(cfg, BASE_SEED)}


@dataclass
class Launcher:
    """Free slots to jobs, each on the partition its trial's tier names."""

    cfg: AutoresearchConfig
    campaign_dir: Path
    ledger: Ledger
    intake: Intake
    sampler: AgentSampler
    frontier: Frontier
    fleet: Fleet
    harness: Path
    now: Callable[[], float]

    def __post_init__(self) -> None:
        c = self.cfg.campaign
        self._warned: set[str] = set()  # reasons a trial could not launch, logged once each
        self._explores = c.fill_idle_slots and not c.synchronous and bool(self.sampler.knobs)
        # (else the proposer's next wave fills an idle slot)
        self._dead = (self.frontier.head(), 0)  # explorations in a row that could not run, and where

    def launch(self, new: bool = True) -> None:
        """Fill free slots: re-runs a decision waits for first, then the oldest proposal, then
        (with `new`) the inner sampler's; without `new` (the campaign is stopping) only the re-runs."""
        free = {name: self.fleet.free_slots(name) for name in self.fleet.pools}
        batches: dict[str, list[JobSpec]] = {name: [] for name in self.fleet.pools}
        # Nothing is queued while slots fill, so one read of the queue serves them all (a read
        # per slot made filling 1,600 slots quadratic in the study's size).
        queue = self.ledger.queue(owed_only=not new)
        room = self._room() if new else math.inf  # owed re-runs run whatever the budget
        while sum(free.values()) > 0 and room > 0:
            trial = self._ask(queue, free, explore=new)
            if trial is None:
                break  # nothing queued for a free partition, and nothing to explore there
            explores = "edit" not in trial.user_attrs
            job = self._prepare(trial)
            if explores:
                self._explored(trial.number, job is not None)
            if job is None:
                continue
            batches[job.pool].append(job)
            free[job.pool] -= 1
            room -= 1
        for jobs in batches.values():
            if jobs:
                handles = self.fleet.submit(jobs)
                for trial_number, handle in handles.items():
                    self.ledger.set(trial_number, {"job": handle})

    def _room(self) -> float:
        """How many more experiments `max_experiments` lets start (it counts launches)."""
        limit = self.cfg.campaign.budget.max_experiments
        if not limit:
            return math.inf
        return limit - self.ledger.launched

    def _ask(self, queue: list[FrozenTrial], free: dict[str, int], explore: bool) -> optuna.Trial | None:
        """Claim the first trial of `queue` whose partition has a free slot (taking it off the
        queue), else with `explore` a new trial for the inner sampler; None if none fits now.
        (Optuna's own `ask` takes the oldest waiting trial, whichever partition it needs.)"""
        study = self.ledger.study
        tiers = self.cfg.cluster.tiers

        def fits(t: FrozenTrial) -> bool:  # (an unknown tier fits: _prepare fails it with its reason)
            return free.get(tiers.get(t.user_attrs.get("tier", "screen"), ""), 1) > 0

        while (first := next((t for t in queue if fits(t)), None)) is not None:
            queue.remove(first)
            if self.ledger.claim(first):
                return optuna.Trial(study, first._trial_id)
        if not explore or not self._exploring() or free.get(tiers.get("screen", ""), 0) == 0:
            return None
        # A new trial for the inner sampler, on the screen tier (Study.ask would pop a queued one).
        return optuna.Trial(study, study._storage.create_new_trial(study._study_id))

    def _exploring(self) -> bool:
        """Whether a free slot may take a new trial for the inner sampler: not once its last
        MAX_DEAD_EXPLORATIONS on this frontier could not run, until the frontier changes
        (else it drew dead trials every poll, thousands of them, and never reached the budget)."""
        if not self._explores:
            return False
        if self._dead[0] != self.frontier.head():
            self._dead = (self.frontier.head(), 0)
        return self._dead[1] < MAX_DEAD_EXPLORATIONS

    def _explored(self, number: int, ran: bool) -> None:
        """Count an exploration that could not run (`ran` False) against its frontier; say once
        when the sampler stops there, with the last reason."""
        head, dead = self._dead
        self._dead = (head, 0 if ran else dead + 1)
        if self._dead[1] == MAX_DEAD_EXPLORATIONS:
            reason = self.ledger.trial(number).user_attrs.get("reason", "")
            log.warning(
                "the inner sampler's last %d explorations could not run (the last: %s): "
                "no more on frontier %s until a change is kept",
                MAX_DEAD_EXPLORATIONS,
                reason,
                head,
            )

    def _prepare(self, trial: optuna.Trial) -> JobSpec | None:
        """Build a claimed trial's workspace (a queued candidate's, or an exploration one's)."""
        attrs = trial.user_attrs
        try:
            cand = self.intake.load_candidate(attrs)
        except InvalidCandidate as err:
            self._invalid(trial.number, attrs.get("description", ""), str(err))
            return None
        if "edit" not in attrs:
            attrs = {"kind": "exploration", "wave": 0, "source": "inner-sampler"}
            self.ledger.set(trial.number, {**attrs, "description": cand.description, "tier": cand.tier})
        measures = attrs.get("kind") in MEASUREMENT_KINDS
        try:
            frontier_source, parent = self.frontier.source(), self.frontier.head()
            if measures:
                measured = self._measured_source(attrs)
                if measured is None:
                    why = (
                        f"the train.py it re-runs is gone with trial {attrs['validates']}'s experiment folder"
                    )
                    self.ledger.fail(trial.number, {"status": "skip", "reason": why})
                    return None
                source, knobs = measured
            else:
                knobs = self.sampler.resolve_knobs(trial, cand, partial(self.ledger.knob_runs, cand.tier))
                source = build_source(frontier_source, cand.edits, knobs)
            run_key = source_version(source)
            if not measures:
                reason = self._redundant(trial.number, source, frontier_source, run_key)
                if reason:
                    # knobs and parent let proposers see it as tried on this frontier
                    tried = {"knobs": json.dumps(knobs, sort_keys=True), "parent": parent}
                    self.ledger.fail(trial.number, {**tried, "status": "skip", "reason": reason})
                    return None
        except (InvalidCandidate, ValueError) as err:
            head = self.frontier.head()
            own_fault = isinstance(err, InvalidOnAnyFrontier)  # (an older version let it in)
            if isinstance(err, InvalidCandidate) and attrs.get("queued_on", head) != head and not own_fault:
                # it applied when queued: a keep since then changed what it edits
                kept = f"trial {self.frontier.head_trial()} kept"
                reason = f"no longer applies: the frontier changed since it was queued ({kept}); {err}"
                self.ledger.fail(trial.number, {"status": "skip", "reason": reason, "parent": head})
                return None
            self._invalid(trial.number, cand.description, str(err))
            return None
        pool_name = self.cfg.cluster.tiers.get(cand.tier, "")
        if pool_name not in self.fleet.pools:
            why = f"tier {cand.tier!r} has no partition now"
            self.ledger.fail(trial.number, {"status": "invalid", "reason": why})
            self._warn_once(trial.number, why)
            return None
        pool = self.fleet.pools[pool_name]
        # A change is screened with the seed of the frontier it is built on, whenever it was queued.
        seed = int(attrs["seed"]) if measures else screening_seed(self.frontier.generation())
        exp_dir = experiment_dir(self.campaign_dir, trial.number)
        workspace = create_workspace(exp_dir, frontier_source, source, self.harness)
        spec = {
            "trial": trial.number,
            "deadline_s": deadline_seconds(self.cfg),
            "harness_sha256": workspace.harness_sha256,
            "gpu_type": pool.gpu_type,
            "partition": pool.partition or pool.name,
            "env": self._job_env(seed),
            "launch": secrets.token_hex(8),  # this launch's own: the runner writes only into its folder
        }
        write_json_atomic(exp_dir / SPEC_FILE, spec)
        launched: dict[str, Any] = {}
        if attrs.get("kind") == "exploration":
            cand.knobs = knobs
            launched["key"] = candidate_key(cand, parent)
        self.ledger.launch(
            trial.number,
            {
                **launched,
                "knobs": json.dumps(knobs, sort_keys=True),
                "run_key": run_key,
                "knobs_only": not measures and self.sampler.knobs_only(cand),
                "parent": parent,
                "seed": seed,
                "exp_dir": str(exp_dir.relative_to(self.campaign_dir)),
                "pool": pool_name,
                PRICE_ATTR: pool.price_per_gpu_hour,  # its hours cost this, whatever config.yaml says later
                "gpu_type": pool.gpu_type,
                HARDWARE_ATTR: hardware_of(pool),  # its tier is held to it (`hardware_changes`)
                "partition": pool.partition or pool.name,
                "launched_at": self.now(),
            },
        )
        self.intake.ran(int(attrs.get("wave", 0)))
        log.info("trial %d: launching on %s: %s", trial.number, pool_name, cand.description)
        return JobSpec(trial.number, exp_dir, pool_name)

    def _invalid(self, number: int, description: str, reason: str) -> None:
        """A claimed trial that cannot run: failed as invalid, its reason shown to the proposer."""
        self.ledger.fail(number, {"status": "invalid", "reason": reason})
        self.intake.rejected.append(f"{description}: {reason}")
        self._warn_once(number, reason)

    def _warn_once(self, number: int, reason: str) -> None:
        """Say why a trial could not launch, once per reason: one that fails every trial (Optuna
        refusing a knob's distribution) would otherwise fill the log, or go unsaid."""
        if reason not in self._warned:
            self._warned.add(reason)
            log.warning("trial %d: invalid: %s (not logged again for later trials)", number, reason)

    def _job_env(self, seed: int) -> dict[str, str]:
        """The harness's environment in a job: the data step's, plus the GPU requirement (the
        data step may run on a CPU node)."""
        env = harness_env(self.cfg, seed)
        if self.cfg.campaign.require_gpu:
            env["AUTORESEARCH_REQUIRE_GPU"] = "1"
        return env

    def _measured_source(self, attrs: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        """What a measurement runs: exactly the train.py of the trial it re-runs, or the start. A
        kept trial's is read from its frontier commit, which outlives its experiment folder (one
        deleted by hand failed every launch of its re-runs, at each resume). None where a trial
        not kept has lost its folder: that trial is lost (`Campaign._lose_vanished`)."""
        if "validates" not in attrs:
            return self.frontier.start_source(), {}
        number = int(attrs["validates"])
        original = self.ledger.trial(number).user_attrs
        knobs = json.loads(original.get("knobs", "{}"))
        if commit := self.frontier.commit_of_trial(number):
            return self.frontier.source_at(commit), knobs
        try:
            return (self.campaign_dir / original["exp_dir"] / "train.py").read_text(), knobs
        except FileNotFoundError:
            return None

    def _redundant(self, number: int, source: str, frontier_source: str, run_key: str) -> str:
        """Why running this train.py would teach nothing new, or ''. Proposals made on an older
        frontier can turn into the frontier itself, or into a twin of another experiment."""
        if source == frontier_source:
            return "no change: already part of the frontier"
        if twins := self.ledger.ran(run_key) - {number}:
            return f"same train.py as trial {min(twins)}"
        return ""
