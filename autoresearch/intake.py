"""How work enters the campaign's queue: the proposer's waves, checked before they cost a slot,
and the runs the engine owes itself (baselines, re-runs, retries, stacked winners).

Each is a WAITING trial whose `edit` attribute points at its candidate's file under proposals/.
The engine's own runs are queued idempotently, by (tier, seed) or by the trial they stand for, so
a controller killed part-way through queueing them queues only the rest when it resumes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autoresearch.config import AutoresearchConfig
from autoresearch.files import write_json_atomic
from autoresearch.fixes import WaveRepairs, fix_attempts
from autoresearch.fleet.base import Pool
from autoresearch.frontier import Frontier
from autoresearch.knob_types import constant_types, retype_problems, value_problem
from autoresearch.knobs import unset_by_edits
from autoresearch.ledger import Ledger
from autoresearch.proposals import Candidate, Wave, candidate_from_dict, candidate_to_dict
from autoresearch.sampler import AgentSampler, candidate_key, knob_value_problem
from autoresearch.workspace import (
    OVERWRITTEN_EDITS,
    InvalidCandidate,
    apply_edits,
    build_source,
    overwritten_edits,
)

log = logging.getLogger("autoresearch")

BASE_SEED = 42  # the screening seed of the changes to the campaign's starting train.py
MAX_STACK_DEPTH = 2
NOT_RUN = ("cancelled", "lost")  # ended by a person or the cluster: says nothing of its train.py
# What a retry inherits: it stands for the run it replaces (a stack's depth too, else a retried
# stack could be stacked again past MAX_STACK_DEPTH).
RETRY_KEEPS = (
    "kind",
    "wave",
    "source",
    "seed",
    "fix_of",
    "validates",
    "reference",
    "stack_of",
    "stack_depth",
)


def measurement_seeds(count: int) -> list[int]:
    """The seeds of the runs that measure a version (baselines, re-runs, a new frontier's runs): the
    same for every version, so two can be compared seed for seed, and never a screening seed,
    which picked the changes it promoted."""
    return [BASE_SEED + 1 + i for i in range(count)]


def screening_seed(generation: int) -> int:
    """The seed a change is screened with, one per frontier (42, 1042, 2042, ... after each keep):
    the frontier runs it once, unpicked, and each change built on it is compared with that run seed
    for seed. A kept change's own run at its screening seed picked it, so it cannot serve again."""
    return BASE_SEED + 1000 * generation


def confirm_tier(cfg: AutoresearchConfig, pools: dict[str, Pool]) -> str | None:
    """Where promoted changes are confirmed: the validate tier's own hardware if it has any,
    else the screen tier; None when `validate_seeds` is 0 (screen winners are kept at once)."""
    if cfg.campaign.validate_seeds <= 0:
        return None
    tiers = cfg.cluster.tiers
    apart = tiers.get("validate") in pools and tiers.get("validate") != tiers.get("screen")
    return "validate" if apart else "screen"


@dataclass
class Intake:
    """The queue's one door: every WAITING trial, the proposer's or the engine's, is added here."""

    cfg: AutoresearchConfig
    campaign_dir: Path
    ledger: Ledger
    sampler: AgentSampler
    frontier: Frontier
    pools: dict[str, Pool]
    now: Callable[[], float]
    rejected: list[str] = field(default_factory=list, init=False)  # shown to the proposer
    # The latest waves in a row none of whose candidates has run (yet): nothing new in them, or
    # each invalid or skipped (a twin of a run). A wave that queued candidates which all die at
    # launch must count, or a proposer of such waves kept the campaign going for ever.
    empty_waves: int = field(default=0, init=False)
    waves: int = field(default=0, init=False)  # waves this controller took in
    _came: dict[int, int] = field(default_factory=dict, init=False)  # wave number -> `waves` then

    def add(self, cand: Candidate, attrs: dict[str, Any]) -> None:
        """Queue one candidate: its file under proposals/ (written whole or not at all: a torn one
        could not be run, nor retried), then its WAITING trial, with the frontier it was checked
        against (`queued_on`)."""
        edit = self._keep_whole(cand)
        head = self.frontier.head()
        self.sampler.enqueue(self.ledger.study, cand, head, {"edit": edit, "queued_on": head, **attrs})

    def _keep_whole(self, cand: Candidate) -> str:
        """Write the candidate as proposed to proposals/, named by the number its trial will have,
        and return that file's path in the campaign folder (its trial's `edit`)."""
        name = f"proposals/t{self.ledger.size():05d}-{cand.tier}.json"
        write_json_atomic(self.campaign_dir / name, candidate_to_dict(cand))
        return name

    # -- the proposer's waves ----------------------------------------------------------------
    def wave(self, wave: Wave) -> None:
        """A wave's new candidates into the queue; those that cannot run become FAIL trials."""
        queued = self.ledger.all()
        number = 1 + max((t.user_attrs.get("wave", 0) for t in queued), default=0)
        write_json_atomic(
            self.campaign_dir / "proposals" / f"wave{number:04d}.json",
            {"rationale": wave.rationale, "source": wave.source},
        )
        seen = {t.user_attrs.get("key") for t in queued}
        head = self.frontier.head()
        accepted, dropped = wave.expand(
            seen, self.cfg.campaign.max_wave, key=lambda c: candidate_key(c, head)
        )
        self.waves += 1
        self._came[number] = self.waves  # (a number queueing nothing is the next wave's too)
        self.empty_waves += 1  # until one of its candidates runs (`ran`)
        self.rejected.extend(dropped)
        fixes = WaveRepairs(fix_attempts(queued))  # the study read once for the wave, not per fix
        for cand in accepted:
            reason = self.precheck(cand, fixes)
            attrs = {"kind": "experiment", "wave": number, "source": wave.source}
            if cand.fix_of is not None:
                attrs["fix_of"] = cand.fix_of
                fixes.taken(cand.fix_of)
            if reason:
                self._record_invalid(cand, attrs, reason)
            else:
                self.add(cand, attrs)
        log.info(
            "wave %d from %s: %d queued, %d dropped%s",
            number,
            wave.source,
            len(accepted),
            wave.size() - len(accepted),
            f" ({wave.rationale[:100]})" if wave.rationale else "",
        )

    def ran(self, wave: int) -> None:
        """A candidate of wave number `wave` launched: only the waves that came after it can be
        the empty ones. (Wave 0, the engine's runs, and earlier controllers' waves change nothing.)"""
        if wave in self._came:
            self.empty_waves = min(self.empty_waves, self.waves - self._came[wave])

    def precheck(self, cand: Candidate, fixes: WaveRepairs | None = None) -> str:
        """Why a candidate cannot run, or '' if it can: checked before it costs a slot. `fixes`:
        the repairs proposed so far, where the caller counted them (else read from the study)."""
        tiers = self.cfg.cluster.tiers
        if cand.tier not in tiers or tiers[cand.tier] not in self.pools:
            return f"tier {cand.tier!r} has no partition in this cluster"
        if cand.tier not in ("screen", confirm_tier(self.cfg, self.pools)):
            return (
                f"tier {cand.tier!r} has no baselines to judge a change by in this campaign (only a "
                "validate tier on a partition of its own, with validate_seeds > 0, has): propose it on "
                "the screen tier"
            )
        if cand.fix_of is not None:
            fixes = fixes or WaveRepairs(fix_attempts(self.ledger.all()))
            if why := fixes.past_limit(cand.fix_of, self.cfg.agent.max_fix_attempts):
                return why
        try:
            build_source(
                self.frontier.source(), cand.edits, {k: v for k, v in cand.knobs.items() if v is not None}
            )
        except InvalidCandidate as err:
            return str(err)
        if cand.edits and (why := self._unsets_a_knob(cand)):
            return why
        edited = apply_edits(self.frontier.source(), cand.edits)
        if cand.edits and self._drawn_over(cand, edited):
            return OVERWRITTEN_EDITS
        types = constant_types(edited)  # (parsed by build_source)
        if cand.edits and (why := self._retypes_a_knob(edited, types)):
            return why
        for name, value in cand.knobs.items():
            spec = self.sampler.knobs.get(name)  # the campaign's declared knobs, by name
            if spec and value is not None and (why := knob_value_problem(spec, value)):
                return f"knob {name}: {why}"
            if not spec and (why := value_problem(name, value, types)):
                return why
        return ""

    def _drawn_over(self, cand: Candidate, edited: str) -> bool:
        """Whether the sampler's draw of the candidate's free knobs, with its fixed ones, writes
        over all its edits (`overwritten_edits`; `build_source` judged the fixed ones alone): said
        now, not at its launch after a draw."""
        drawn = any(value is None and name in self.sampler.knobs for name, value in cand.knobs.items())
        return drawn and overwritten_edits(self.frontier.source(), edited, self._set_at_launch(cand))

    def _set_at_launch(self, cand: Candidate) -> list[str]:
        """The knobs the candidate's launch writes into train.py: those given a value, and the
        declared ones left free, which the sampler draws. An undeclared one left free is not set
        (`AgentSampler.resolve_knobs`): an edit of its constant runs as written."""
        return [name for name, value in cand.knobs.items() if value is not None or name in self.sampler.knobs]

    def _unsets_a_knob(self, cand: Candidate) -> str:
        """Why the candidate's edits leave a declared knob that the frontier lets be set unsettable
        (`knobs.unset_by_edits`), or '': the last guard, whatever proposed it. (The edited source
        is the one `build_source` just parsed.)"""
        source = self.frontier.source()
        broken = unset_by_edits(source, apply_edits(source, cand.edits), self.sampler.knobs)
        return broken[0] if broken else ""

    def _retypes_a_knob(self, edited: str, types: dict[str, tuple[type, int]]) -> str:
        """Why a candidate's edits, which made `edited` (its constants' `types`), give a declared
        knob's constant another type than the frontier's, or '' (`retype_problems`)."""
        frontier = constant_types(self.frontier.source())
        retyped = retype_problems(self.sampler.knobs.values(), frontier, types, edited)
        return retyped[0] if retyped else ""

    def _record_invalid(self, cand: Candidate, attrs: dict[str, Any], reason: str) -> None:
        """An invalid proposal becomes a FAIL trial with its reason; nothing runs, so it has no
        start (nor pool): only its end, which orders it among the results. Its candidate is kept
        whole under proposals/ as a queued one is: the reason and the log line quote only its start."""
        edit = self._keep_whole(cand)
        self.ledger.study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.FAIL,
                user_attrs={
                    **attrs,
                    "edit": edit,
                    "description": cand.description,
                    "hypothesis": cand.hypothesis,
                    "tier": cand.tier,
                    "key": candidate_key(cand, self.frontier.head()),
                    "status": "invalid",
                    "reason": reason,
                    "ended_at": self.now(),
                },
            )
        )
        self.rejected.append(f"{cand.description}: {reason}")
        log.warning("rejected %r: %s (as proposed: %s)", cand.description, reason, edit)

    # -- the engine's own runs ---------------------------------------------------------------
    def baselines(self, confirm_on: str | None) -> None:
        """The starting point on the screen tier, and on the validate tier when promoted changes are
        confirmed there. The tier that confirms gets a run at each re-run seed, so a confirmation
        compares the two versions seed for seed; the screen tier one at the first screening seed,
        while nothing is kept yet. Until then, a baseline cancelled (scancel) or lost for good is
        queued again (called again when one is cancelled): every change is judged by it. (A run
        queued now is of the frontier, which after a keep is measured by runs of its own.)"""
        again = self.frontier.generation() == 0
        had = [t for t in self.ledger.all() if t.user_attrs.get("kind") == "baseline"]
        queued = [t for t in had if not (again and t.user_attrs.get("status") in NOT_RUN)]
        attrs = {"kind": "baseline"}
        c = self.cfg.campaign
        on_screen = measurement_seeds(
            max(1, c.baseline_seeds, c.validate_seeds if confirm_on == "screen" else 0)
        )
        if self.frontier.generation() == 0:
            on_screen.append(screening_seed(0))
        screen_setting = "baseline_seeds"
        if confirm_on == "screen" and c.validate_seeds > c.baseline_seeds:
            screen_setting = "validate_seeds"
        wanted = {"screen": (on_screen, screen_setting)}
        if confirm_on == "validate":
            wanted["validate"] = (measurement_seeds(c.validate_seeds), "validate_seeds")
        for tier, (seeds, setting) in wanted.items():
            self._say_if_more_baselines(tier, seeds, setting, had)
            self._repeats(tier, seeds, "baseline", attrs, queued)

    def _say_if_more_baselines(
        self, tier: str, seeds: list[int], setting: str, had: list[FrozenTrial]
    ) -> None:
        """A resumed campaign whose setting now asks for more baselines than it `had` (raised on
        the command line, or by a campaign file changed since) runs the extra ones before any
        change: say why, once (the next call finds them queued). A seed it had, cancelled, is no news."""
        seeds_had = {t.user_attrs.get("seed") for t in had if t.user_attrs.get("tier", "screen") == tier}
        if seeds_had and (more := [s for s in seeds if s not in seeds_had]):
            log.info(
                "campaign.%s=%d asks for %d more baseline run(s) on the %s tier than this campaign "
                "had: queued, they run before new changes",
                setting,
                getattr(self.cfg.campaign, setting),
                len(more),
                tier,
            )

    def new_frontier(self, trial: int, confirm_on: str | None) -> None:
        """The frontier trial `trial` kept, run on the screen tier at its screening seed (the changes
        built on it are compared with that run), and at the measurement seeds when it was confirmed
        elsewhere or not at all: its one screen run there was picked for being low."""
        queued = self.ledger.queued_for("validates", trial)
        seed = screening_seed(self.frontier.generation())
        self._rerun(trial, "screen", [seed], "the new frontier", queued, reference=True)
        if confirm_on != "screen":
            seeds = measurement_seeds(max(1, self.cfg.campaign.baseline_seeds))
            self._rerun(trial, "screen", seeds, "the new frontier", queued)

    def reruns(
        self, trial: int, tier: str, seeds: int, description: str, queued: list[FrozenTrial] | None = None
    ) -> bool:
        """Trial `trial`'s exact train.py again, on the measurement seeds, on `tier` (before new proposals):
        those not `queued` yet (its re-runs, read from the study when the caller has not). Says
        whether it queued any."""
        if queued is None:
            queued = self.ledger.queued_for("validates", trial)
        return self._rerun(trial, tier, measurement_seeds(seeds), description, queued)

    def _rerun(
        self,
        trial: int,
        tier: str,
        seeds: list[int],
        description: str,
        queued: list[FrozenTrial],
        **attrs: Any,
    ) -> bool:
        """Trial `trial`'s exact train.py at each of `seeds` on `tier` (`_repeats`); `attrs`: more."""
        attrs = {"kind": "validation", "validates": trial, **attrs}
        return self._repeats(tier, seeds, f"re-run trial {trial}: {description}", attrs, queued)

    def _repeats(
        self,
        tier: str,
        seeds: list[int],
        description: str,
        attrs: dict[str, Any],
        queued: list[FrozenTrial],
    ) -> bool:
        """One train.py on `tier` at each of `seeds`: those not `queued` yet, so a controller killed
        part-way through queues the rest when it resumes. Says whether it queued any."""
        have = {(t.user_attrs.get("tier", "screen"), t.user_attrs.get("seed")) for t in queued}
        missing = [s for s in seeds if (tier, s) not in have]
        for seed in missing:
            cand = Candidate(description=description, hypothesis="measured again, unchanged", tier=tier)
            self.add(cand, {**attrs, "seed": seed, "wave": 0, "source": "engine"})
        return bool(missing)

    def retry(
        self, trial: FrozenTrial, counted: bool = True, unlaunched: int = 0, disk_refused: int = 0
    ) -> str:
        """A run lost to infrastructure, queued again as it was (once, whatever the restarts);
        `counted`: the retry takes one of the experiment's `max_retries` (a preemption's does not);
        `unlaunched`: how many of its runs so far were lost before their launch was recorded;
        `disk_refused`: how many the disk of their folder refused (`disk_full`).
        Says why it was not ('' if it was): its proposal file cannot be read."""
        if self.ledger.queued_for("retry_of", trial.number):
            return ""  # queued before a controller died
        try:
            cand = self.candidate_of(trial)
        except InvalidCandidate as err:
            return str(err)
        keep = {k: v for k, v in trial.user_attrs.items() if k in RETRY_KEEPS}
        retries = int(trial.user_attrs.get("retries", 0)) + int(counted)
        attrs = {**keep, "retry_of": trial.number, "retries": retries}
        tallies = {"unlaunched": unlaunched, "disk_refused": disk_refused}
        self.add(cand, {**attrs, **{name: n for name, n in tallies.items() if n}})
        return ""

    def stack(self, trial: FrozenTrial, reason: str) -> str:
        """A winner built on an older frontier, queued again on the current one; says what became of it."""
        depth = int(trial.user_attrs.get("stack_depth", 0))
        if depth >= MAX_STACK_DEPTH:
            return f"{reason}; not re-run (stacked {depth} times already)"
        try:
            cand = self.candidate_of(trial)
        except InvalidCandidate as err:
            return f"{reason}; not re-run: {err}"
        if not cand.description.startswith("stack: "):
            cand.description = f"stack: {cand.description}"
        if self.precheck(cand):
            return f"{reason}; its change no longer applies to the current frontier"
        if not self.ledger.queued_for("stack_of", trial.number):  # else queued before a controller died
            attrs = {
                "kind": "stack",
                "wave": trial.user_attrs.get("wave", 0),
                "source": trial.user_attrs.get("source", ""),
                "stack_of": trial.number,
                "stack_depth": depth + 1,
            }
            self.add(cand, attrs)
        return f"{reason}; re-queued on the current frontier"

    # -- candidates of trials ----------------------------------------------------------------
    def candidate_of(self, trial: FrozenTrial) -> Candidate:
        """The trial's candidate with its knobs as they ran (free ones resolved), to queue again.
        Without an edit that replaces a text by itself, nor edits its knobs write over: an older
        version queued them, which the engine now refuses (`workspace.edit_problem`,
        `overwritten_edits`), and they change nothing, so its run, lost or stacked, is the same
        train.py without them."""
        attrs = trial.user_attrs
        cand = self.load_candidate(attrs)
        cand.edits = [edit for edit in cand.edits if edit.search != edit.replace]
        if "edit" not in attrs:
            cand.description = attrs.get("description", cand.description)
        cand.knobs.update(json.loads(attrs.get("knobs", "{}")))
        if cand.edits and self._written_over(cand):
            cand.edits = []
        return cand

    def _written_over(self, cand: Candidate) -> bool:
        """Whether the knobs its launch sets write over all its edits on the current frontier (False
        where they do not apply to it: `precheck` or the launch says why)."""
        frontier = self.frontier.source()
        try:
            edited = apply_edits(frontier, cand.edits)
        except InvalidCandidate:
            return False
        return overwritten_edits(frontier, edited, self._set_at_launch(cand))

    def load_candidate(self, attrs: dict[str, Any]) -> Candidate:
        """The proposed candidate a trial points to, or a fresh exploration one when it has none.
        Raises InvalidCandidate for a file that cannot be read (gone, or torn by a controller
        killed while writing it before writes were atomic): that trial cannot run, but the
        campaign can go on."""
        if "edit" not in attrs:
            return self.sampler.exploration_candidate()
        try:
            return candidate_from_dict(json.loads((self.campaign_dir / attrs["edit"]).read_text()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            why = (str(err).splitlines() or [""])[0]
            raise InvalidCandidate(
                f"proposal file unreadable: {attrs['edit']}: {type(err).__name__}: {why}"
            ) from None
