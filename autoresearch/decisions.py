"""Keep or discard: each result judged against the frontier on its own tier, and told once.

A result waits until its tier's baselines, and the run of its frontier at its screening seed,
have landed. A new result is screened against that run, or the frontier's runs: discarded, or
promoted to confirmation by re-runs compared with the runs of the version it was built on, seed
for seed where that is the sharper test (kept at once when the campaign confirms nothing). A
winner built on an older frontier is stacked, re-run on the current one, rather than kept
unmeasured. A keep is a frontier commit first and a study tell second, so a controller killed in
between finds the commit and tells the same keep when it resumes.
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from autoresearch.config import AutoresearchConfig
from autoresearch.frontier import Frontier
from autoresearch.intake import Intake
from autoresearch.ledger import MEASUREMENT_KINDS, Ledger
from autoresearch.policy import MIN_PAIR_DOF, Pairs, Policy, Verdict, degrees_of_freedom, pooled_noise
from autoresearch.results import MEASUREMENTS, frontier_runs, measured_by_seed, measurements, tier_noise
from autoresearch.thresholds import THRESHOLDS_ATTR, thresholds
from autoresearch.workspace import experiment_dir, source_version

log = logging.getLogger("autoresearch")


@dataclass
class Decisions:
    """Results waiting for a verdict (`pending`), and the frontier's runs and noise they are judged by."""

    cfg: AutoresearchConfig
    campaign_dir: Path
    ledger: Ledger
    intake: Intake
    frontier: Frontier
    policy: Policy
    confirm_on: str | None  # confirm_tier(): fixed for a controller's run
    # trial -> its kind, tier and seed
    pending: dict[int, tuple[str, str, int | None]] = field(default_factory=dict, init=False)
    _judged_cache: dict[str, tuple[list[float], float | None]] | None = field(default=None, init=False)
    _reruns: dict[int, list[int]] = field(default_factory=dict, init=False)  # trial -> its re-runs
    # baselines and new frontiers' runs at their screening seeds not yet finished (`_awaited`)
    _references: set[int] = field(default_factory=set, init=False)
    _indexed: int = field(default=0, init=False)  # trials numbered below this are indexed
    _deltas: dict[str, dict[int, list[float]]] | None = field(default=None, init=False)  # _groups
    _shapes: dict[int, bool | None] = field(default_factory=dict, init=False)  # trial -> _same_shape
    _pooled: dict[tuple[str, bool | None], Pairs] = field(default_factory=dict, init=False)  # _pairs
    _params: dict[str, int | None] = field(default_factory=dict, init=False)  # version -> its parameter count
    _versions: dict[str, str] = field(default_factory=dict, init=False)  # commit -> its train.py version
    _by_seed: dict[tuple[str, str], dict[int, float]] = field(default_factory=dict, init=False)

    def add(self, trial: FrozenTrial) -> None:
        """A result to decide with the others of this poll (`decide_pending`)."""
        self.pending[trial.number] = (
            trial.user_attrs.get("kind", ""),
            trial.user_attrs.get("tier", "screen"),
            trial.user_attrs.get("seed"),
        )

    def judged(self) -> dict[str, tuple[list[float], float | None]]:
        """Per tier with a baseline: the frontier's runs there and the seed noise measured there.
        Cached until a measurement or a keep is told (nothing else moves them): rebuilding them
        from every result on every decision made the controller slower as a campaign grew."""
        if self._judged_cache is None:
            table = self.ledger.table()
            tiers = {r["tier"] for r in table if r["status"] == "baseline"}
            self._judged_cache = {
                tier: (frontier_runs(table, tier), tier_noise(table, tier)) for tier in tiers
            }
        return self._judged_cache

    def _awaited(self) -> set[tuple[str, int | None]]:
        """The runs still to land (queued or running) that results are compared with: (tier, None)
        for a tier with a baseline to run, for which every result there waits; (tier, seed) for a
        new frontier's run at its screening seed, for which the results screened with it wait."""
        awaited = set()
        for number in sorted(self._references):
            trial = self.ledger.trial(number)
            if trial.state.is_finished():
                self._references.discard(number)
            elif number not in self.pending:
                seed = None if trial.user_attrs.get("kind") == "baseline" else trial.user_attrs.get("seed")
                awaited.add((trial.user_attrs.get("tier", "screen"), seed))
        return awaited

    def decide_pending(self, final: bool = False) -> None:
        """Decide results whose runs to compare with have landed (`final`: all of them, the campaign ends)."""
        self._index_new_trials()
        # Measurements first: the decisions below compare against them.
        for number, (kind, _, _) in sorted(self.pending.items()):
            if kind in MEASUREMENT_KINDS:
                trial = self.ledger.trial(number)
                status = "baseline" if kind == "baseline" else "rerun"
                record = self._new_frontier_pairs(trial)
                self._complete(
                    number, trial.user_attrs["val_bpb"], {**record, "status": status, "reason": ""}
                )
                log.info("trial %d: %s", number, measured(trial, status))
        if not self.pending:
            return
        awaited = set() if final else self._awaited()
        for number, (_, tier, seed) in sorted(self.pending.items()):
            if (tier, None) in awaited or (tier, seed) in awaited:
                continue
            trial = self.ledger.trial(number)
            if trial.user_attrs.get("promoted") and (self.confirm_on, None) in awaited:
                continue  # its re-runs are judged against the confirm tier's baselines
            if tier not in self.judged():
                self._decide(trial, "discard", f"no baseline on the {tier} tier")
                continue
            kept_commit = self.frontier.commit_of_trial(number)
            if kept_commit:  # kept by a controller that died before telling the study
                self._decide(trial, "keep", "resumed", commit=kept_commit)
            elif trial.user_attrs.get("promoted"):
                reruns = [self.ledger.trial(n) for n in self._reruns.get(number, [])]
                self._confirm(trial, reruns, final)
            else:
                self._screen(trial)

    def _index_new_trials(self) -> None:
        """Add the re-runs and baselines among the trials queued since the last pass to their
        indexes (a trial's `validates` and `kind` are set when it is queued and never change):
        scanning the whole study on every pass made the controller slower as a campaign grew."""
        for t in map(self.ledger.trial, range(self._indexed, self.ledger.size())):
            if "validates" in t.user_attrs:
                self._reruns.setdefault(t.user_attrs["validates"], []).append(t.number)
            reference = t.user_attrs.get("kind") == "baseline" or t.user_attrs.get("reference")
            if reference and not t.state.is_finished():
                self._references.add(t.number)
            self._indexed = t.number + 1

    def _screen(self, trial: FrozenTrial) -> None:
        """A new result against the run of the version it was built on at its seed (`_screen_pairs`),
        or the frontier's runs on its tier, whichever the policy finds sharper: discard it, or
        promote it to confirmation (kept at once when the campaign confirms nothing)."""
        tier = trial.user_attrs.get("tier", "screen")
        frontier, noise = self.judged()[tier]
        pairs = self._screen_pairs(trial, tier)
        verdict = self.policy.screen(trial.user_attrs["val_bpb"], frontier, noise, pairs)
        if not verdict.better or self._stale(trial) or self.confirm_on is None:
            self._decide(trial, "keep" if verdict.better else "discard", verdict.reason)
            return
        self.ledger.set(trial.number, {"promoted": True, "reason": f"promoted: {verdict.reason}"})
        log.info(
            "trial %d: PROMOTE (%s) %s", trial.number, verdict.reason, trial.user_attrs.get("description")
        )
        self._confirm(self.ledger.trial(trial.number), [], final=False)

    def _screen_pairs(self, trial: FrozenTrial, tier: str) -> Pairs | None:
        """The run of the version a screening run was built on at the same seed (the frontier's
        unpicked run at its screening seed), with the noise of such differences on this tier; None
        where that version lacks the run (a campaign begun before; the run crashed)."""
        seed, parent = trial.user_attrs.get("seed"), trial.user_attrs.get("parent", "")
        if seed is None or not parent:
            return None
        version = self._version_at(parent)
        runs = self._measured_by_seed(version, tier)
        if int(seed) not in runs:
            return None
        return replace(self._pairs(tier, self._same_shape(trial, version)), frontier=(runs[int(seed)],))

    def _confirm(self, trial: FrozenTrial, reruns: list[FrozenTrial], final: bool) -> None:
        """A promoted change: queue its re-runs (those missing, wherever the controller died), and
        when they are in, keep it if they beat the version it was built on (`_verdict`). One overtaken by
        another keep meanwhile runs no more re-runs: once those running are in, it is stacked
        (re-screened on the new frontier) unless they refute it."""
        if not self._stale(trial):
            tier = reruns[0].user_attrs.get("tier", "screen") if reruns else self.confirm_on
            if tier is None:  # resumed with validate_seeds=0: its screening run decides alone
                self._decide(trial, "keep", trial.user_attrs.get("reason", ""))
                return
            description = trial.user_attrs.get("description", "")
            seeds = self.cfg.campaign.validate_seeds
            if self.intake.reruns(trial.number, tier, seeds, description, reruns):
                return
        else:
            for t in reruns:
                if t.state == TrialState.WAITING:
                    self.ledger.drop(t, f"trial {trial.number} was overtaken by a keep: stacked instead")
            reruns = [self.ledger.trial(t.number) for t in reruns]
        if not final and any(not t.state.is_finished() for t in reruns):
            return
        if any(t.user_attrs.get("status") == "crash" for t in reruns):
            self._decide(trial, "discard", "not confirmed: it crashed when run again with another seed")
            return
        runs = {int(t.user_attrs["seed"]): float(t.value) for t in reruns if t.state == TrialState.COMPLETE}
        if not runs:
            stale = self._stale(trial)
            why = "overtaken by a keep before its re-runs ran" if stale else "none of its re-runs finished"
            self._decide(trial, "keep" if stale else "discard", f"not confirmed: {why}")
            return
        on = reruns[0].user_attrs.get("tier", "screen")
        if on not in self.judged():  # every baseline there failed: nothing to compare them with
            self._decide(trial, "discard", f"not confirmed: no baseline on the {on} tier")
            return
        verdict, record = self._verdict(trial, runs, on)
        prefix = "confirmed" if verdict.better else "not confirmed"
        self._decide(
            trial, "keep" if verdict.better else "discard", f"{prefix}: {verdict.reason}", record=record
        )

    def _verdict(
        self, trial: FrozenTrial, runs: dict[int, float], tier: str
    ) -> tuple[Verdict, dict[str, Any]]:
        """A promoted change's re-runs (by seed) against the runs of the version it was built on, as
        independent runs or, where that version ran each of these seeds on `tier`, seed for seed (the
        policy takes the sharper). Also the pairs, to record on the trial."""
        noise = self.judged()[tier][1]
        parent = trial.user_attrs.get("parent", "")
        version = self._version_at(parent) if parent else ""
        by_seed = self._measured_by_seed(version, tier) if version else {}
        seeds = sorted(runs)
        values = [runs[s] for s in seeds]
        independent = measurements(self.ledger.table(), version, tier) or self.judged()[tier][0]
        if not set(seeds) <= set(by_seed):
            return self.policy.confirm(values, independent, noise), {}
        deltas = [runs[s] - by_seed[s] for s in seeds]
        pairs, record = self._pooled_with(tier, trial.number, deltas, self._same_shape(trial, version))
        pairs = replace(pairs, frontier=tuple(by_seed[s] for s in seeds))
        return self.policy.confirm(values, independent, noise, pairs), record

    def _groups(self, tier: str) -> dict[int, list[float]]:
        """The differences seed for seed recorded on `tier`, by trial (read from the study's attr
        `pairs` once per controller, then kept up by `_pooled_with`)."""
        if self._deltas is None:
            self._deltas = {}
            for t in self.ledger.all():
                if "pairs" in t.user_attrs:
                    pairs = t.user_attrs["pairs"]
                    self._deltas.setdefault(pairs["tier"], {})[t.number] = pairs["deltas"]
                    self._shapes[t.number] = pairs.get("same_shape")
        return self._deltas.setdefault(tier, {})

    def _pairs(self, tier: str, same_shape: bool | None) -> Pairs:
        """The noise of a difference between two versions run with the same seed on `tier`, pooled
        over the versions measured there seed for seed with the one they were built on: those that
        kept its parameters' count (`same_shape`) or those that changed it, where they give
        `MIN_PAIR_DOF`, else all (a change that keeps the model's shape draws a seed's luck
        almost as its parent does, one of shape far less: pooled together, the shape changes'
        noise would blunt every test of a hyperparameter). Kept until another is added."""
        if (tier, same_shape) not in self._pooled:
            groups = self._groups(tier)
            alike = [d for n, d in groups.items() if self._shapes.get(n) == same_shape]
            if same_shape is None or degrees_of_freedom(alike) < MIN_PAIR_DOF:
                alike = list(groups.values())
            self._pooled[(tier, same_shape)] = Pairs(pooled_noise(alike), degrees_of_freedom(alike))
        return self._pooled[(tier, same_shape)]

    def _pooled_with(
        self, tier: str, number: int, deltas: list[float], same_shape: bool | None
    ) -> tuple[Pairs, dict[str, Any]]:
        """Trial `number`'s differences seed for seed on `tier` added to the pool: the pool then
        (of `same_shape`'s kind, `_pairs`), and the record of them for the trial (attr `pairs`)."""
        self._groups(tier)[number] = deltas
        self._shapes[number] = same_shape
        self._pooled = {key: pairs for key, pairs in self._pooled.items() if key[0] != tier}
        pairs = self._pairs(tier, same_shape)
        record = {
            "tier": tier,
            "deltas": deltas,
            "noise": pairs.noise,
            "dof": pairs.dof,
            "same_shape": same_shape,
        }
        return pairs, {"pairs": record}

    def _same_shape(self, trial: FrozenTrial, version: str) -> bool | None:
        """Whether `trial`'s train.py has as many parameters as `version` (None where either count is
        unknown): the proxy for a change that keeps the model's shape, and so a seed's draws."""
        params = trial.user_attrs.get("num_params")
        if params is None or not version:
            return None
        if version not in self._params:  # (kept, unknown too, until a measurement is told, as `_by_seed`)
            known = [
                r["num_params"]
                for r in self.ledger.table()
                if r["version"] == version and r["num_params"] != ""
            ]
            self._params[version] = int(known[0]) if known else None
        return None if self._params[version] is None else int(params) == self._params[version]

    def _new_frontier_pairs(self, run: FrozenTrial) -> dict[str, Any]:
        """When `run` is the last of a new frontier's screen runs at the measurement seeds to finish,
        and the frontier was confirmed elsewhere (or not at all), their differences seed for seed
        with the version it was built on: they measure the screen tier's paired noise, where no
        confirmation does. The record for `run` (`pairs`), or {}."""
        kept = run.user_attrs.get("validates")
        if (
            kept is None
            or run.user_attrs.get("tier", "screen") != "screen"
            or run.user_attrs.get("reference")
        ):
            return {}
        trial = self.ledger.trial(int(kept))
        if trial.user_attrs.get("status") != "keep":
            return {}  # a re-run that confirms it: its differences are recorded with the verdict
        others = [self.ledger.trial(n) for n in self._reruns.get(int(kept), []) if n != run.number]
        on_screen = [
            t
            for t in others
            if t.user_attrs.get("tier", "screen") == "screen" and not t.user_attrs.get("reference")
        ]
        if any(not t.state.is_finished() for t in on_screen):
            return {}  # not the last (a lost run's retry among them)
        own = {int(t.user_attrs["seed"]): float(t.value) for t in on_screen if t.state == TrialState.COMPLETE}
        own[int(run.user_attrs["seed"])] = float(run.user_attrs["val_bpb"])
        version = self._version_at(trial.user_attrs.get("parent", ""))
        before = self._measured_by_seed(version, "screen")
        seeds = sorted(set(own) & set(before))
        if len(seeds) < 2:
            return {}
        deltas = [own[s] - before[s] for s in seeds]
        return self._pooled_with("screen", run.number, deltas, self._same_shape(run, version))[1]

    def _version_at(self, commit: str) -> str:
        """The version of the train.py a frontier commit holds (read once: commits never change)."""
        if commit not in self._versions:
            self._versions[commit] = source_version(self.frontier.source_at(commit))
        return self._versions[commit]

    def _measured_by_seed(self, version: str, tier: str) -> dict[int, float]:
        """`results.measured_by_seed`, kept until a measurement or a keep is told, as `judged` is."""
        if (version, tier) not in self._by_seed:
            self._by_seed[(version, tier)] = measured_by_seed(self.ledger.table(), version, tier)
        return self._by_seed[(version, tier)]

    def _stale(self, trial: FrozenTrial) -> bool:
        return trial.user_attrs.get("parent", "") != self.frontier.head()

    def _decide(
        self,
        trial: FrozenTrial,
        status: str,
        reason: str,
        commit: str = "",
        record: dict[str, Any] | None = None,
    ) -> None:
        """Tell the study: keep (the frontier advances), discard, or re-run a winner that was
        built on an older frontier on top of the current one (stacked) rather than keep it unmeasured.
        `record`: more attrs for the trial (a confirmation's pairs)."""
        extra: dict[str, Any] = {**(record or {}), "status": status, "reason": reason}
        extra[THRESHOLDS_ATTR] = thresholds(self.cfg.campaign)  # (a resume may change them)
        attrs = trial.user_attrs
        number, val_bpb = trial.number, attrs["val_bpb"]
        tier = attrs.get("tier", "screen")
        if tier in self.judged():
            extra["delta"] = val_bpb - statistics.fmean(self.judged()[tier][0])
        if status == "keep" and not commit and self._stale(trial):
            stacked = self.intake.stack(trial, f"{reason}; built on an older frontier")
            extra.update(status="discard", reason=stacked)
            log.info("trial %d: %s", number, stacked)
        elif status == "keep":
            if not commit:
                source = (experiment_dir(self.campaign_dir, number) / "train.py").read_text()
                commit = self.frontier.advance(source, number, attrs.get("description", ""))
            self.intake.new_frontier(number, self.confirm_on)
            extra["commit"] = commit
            log.info("trial %d: KEEP %.6f (%s) %s", number, val_bpb, reason, attrs.get("description"))
        else:
            log.info("trial %d: discard %.6f (%s)", number, val_bpb, reason)
        self._complete(number, val_bpb, extra)

    def _complete(self, number: int, value: float, attrs: dict[str, Any]) -> None:
        self.ledger.complete(number, value, attrs)
        if attrs.get("status") in (*MEASUREMENTS, "keep"):
            self._judged_cache = None
            self._by_seed.clear()
            self._params.clear()
        self.pending.pop(number, None)


def measured(trial: FrozenTrial, status: str) -> str:
    """A baseline's or re-run's result as the log says it: these are told no verdict, so without it
    a campaign's first minutes (its baselines) and a resume's collected runs said nothing."""
    attrs = trial.user_attrs
    return f"{status} {attrs['val_bpb']:.6f} ({attrs.get('tier', 'screen')} tier, seed {attrs.get('seed')})"
