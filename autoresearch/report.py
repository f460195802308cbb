"""`python -m autoresearch.report runs/NAME [--out DIR]`: what a campaign found and what it cost, as report.html.

Derived, like results.tsv, from the study and the campaign folder only, so it can be written at
any time (the controller writes it when a campaign ends) and rebuilt after the fact. The facts are
gathered here; `report_html` lays them out.
"""

from __future__ import annotations

import argparse
import errno
import itertools
import math
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autoresearch.agent.usage import usage_totals
from autoresearch.budget import (
    Rate,
    by_pool,
    dollars_of,
    earlier_prices,
    experiment_ran,
    hours_unit,
    hours_without_price,
    pool_gpu_types,
    pool_prices,
    ran_undecided,
    spent_hours,
)
from autoresearch.config import time_budget_seconds
from autoresearch.files import write_atomic, write_failure
from autoresearch.heartbeat import controller_state, stopped_line
from autoresearch.plot import plot_progress
from autoresearch.results import Comparison, compare, frontier_measured, rerun_values, rows
from autoresearch.study import trials
from autoresearch.thresholds import changes_said, thresholds

REPORT_FILE = "report.html"
FAILED = ("crash", "invalid", "lost", "cancelled")
MAX_REASONS = 8
DESCRIPTION = "what a campaign found and what it cost, as report.html"  # (usage names the command as run)


@dataclass(frozen=True)
class TierResult:
    """Where a tier's hardware measured the start and the frontier (mean over seeds where repeated)."""

    tier: str
    baseline: list[float]
    frontier: list[float]  # the runs of the latest frontier measured on this tier
    frontier_trial: int | None  # the kept trial that frontier is (None: the start)
    compared: Comparison  # the two over the seeds both ran, as the keep rule compares versions

    @property
    def change(self) -> float:
        return self.compared.change


@dataclass(frozen=True)
class KeptChange:
    trial: int
    description: str
    hypothesis: str
    source: str  # who proposed it: the agent, the offline proposer, the inner sampler
    val_bpb: float
    delta: float | None  # against the frontier it was judged by
    commit: str
    reason: str  # the decision, with the margin it had to beat
    reruns: dict[str, list[float]]  # by tier: its re-runs on other seeds (confirming, or since)
    diff: str


@dataclass(frozen=True)
class Speedup:
    """A sequential loop runs the same experiments one after another on one GPU: it needs at least
    their summed run time (the agent's thinking between runs not even counted)."""

    sequential_hours: float
    busy_hours: float  # wall time with at least one experiment launched and not yet finished
    # Summed over the experiments, from launch to start (a cluster's queue, a job's start-up): in
    # the wall time, not in the loop's, so it can make a campaign slower than the loop.
    waiting_hours: float

    @property
    def factor(self) -> float:
        return self.sequential_hours / self.busy_hours if self.busy_hours else 0.0

    def said(self) -> str:
        """The factor in words: below 1 it is no speed-up, and says so."""
        if self.factor >= 1:
            return f"a speed-up of {self.factor:.1f}x"
        # (rounded down: 0.998 rounded is "1.00x, slower", which reads as no loss at all; by a
        # hundredth and a hair, as 0.29 * 100 is 28.999999999999996 in floats)
        return f"{math.floor(self.factor * 100 + 1e-9) / 100:.2f}x, slower than the sequential loop"


@dataclass(frozen=True)
class CampaignReport:
    name: str
    settings: dict[str, str]
    started_at: float
    last_result_at: float | None
    running: int
    queued: int
    counts: dict[str, int]  # finished trials by status
    ran: int  # experiments that ran (`experiment_ran`: invalid and skipped candidates never did)
    tiers: list[TierResult]
    rated_hours: dict[Rate, float]  # by pool and launch price
    gpu_types: dict[str, tuple[str, ...]]  # of each pool that ran something (`pool_gpu_types`)
    prices: dict[str, float]  # dollars per GPU-hour, by pool, in config.yaml now
    unpriced_hours: dict[str, dict[str, float]]  # by pool and GPU type (`hours_without_price`)
    llm: dict[str, Any]  # usage_totals
    speedup: Speedup
    kept: list[KeptChange]
    failure_reasons: list[tuple[str, int]] = field(default_factory=list)
    controller: str | None = None  # running, or stopped and why (`heartbeat.controller_state`)
    awaiting: int = 0  # ran, their decision not made (`ran_undecided`): of `ran`, not `running`

    @property
    def gpu_hours(self) -> dict[str, float]:
        return by_pool(self.rated_hours)

    @property
    def gpu_dollars(self) -> float:
        return dollars_of(self.rated_hours, self.prices)

    @property
    def hours_unit(self) -> str:
        return hours_unit(itertools.chain.from_iterable(self.gpu_types.values()))

    def pool_hours(self, pool: str) -> dict[Rate, float]:
        return {rate: h for rate, h in self.rated_hours.items() if rate[0] == pool}


def busy_hours(intervals: list[tuple[float, float]]) -> float:
    """The length of the union of [start, end] intervals, in hours."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total / 3600


def _text(value: Any) -> str:
    """A user attr shown as words: a study written by another version, or edited, may hold one of
    another type (a number, a list, None), which is one odd value on the page, not no page."""
    return "" if value is None else str(value)


def _number(value: Any) -> float | None:
    """A user attr that should be a number, or None where it is none (see `_text`)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _kept_change(campaign_dir: Path, t: FrozenTrial, reruns: dict[str, list[float]]) -> KeptChange:
    attrs = t.user_attrs
    diff_path = campaign_dir / _text(attrs.get("exp_dir")) / "train.diff"
    return KeptChange(
        trial=t.number,
        description=_text(attrs.get("description")),
        hypothesis=_text(attrs.get("hypothesis")),
        source=_text(attrs.get("source")),
        val_bpb=float(t.value),
        delta=_number(attrs.get("delta")),
        commit=_text(attrs.get("commit")),
        reason=_text(attrs.get("reason")),
        reruns=reruns,
        # (as UTF-8 whatever the locale, its damage replaced: a file written under another locale,
        # or damaged, is one odd character in the page, not a report that cannot be written)
        diff=diff_path.read_text(encoding="utf-8", errors="replace") if diff_path.is_file() else "",
    )


def names_a_tier(tier: Any) -> bool:
    """Whether a row's tier is a tier's name to report under. None or another type (a study
    edited, or written by another version) or missing (a trial of a version before tiers) names
    none: such runs are left out of what the report says by tier, not its end."""
    return isinstance(tier, str) and bool(tier)


def _tier_results(table: list[dict[str, Any]]) -> list[TierResult]:
    """Screen first, then validate: the start and the latest frontier each tier has measured."""
    results = []
    named = {r["tier"] for r in table if r["status"] == "baseline" and names_a_tier(r["tier"])}
    tiers = sorted(named, key=lambda t: (t != "screen", t))
    for tier in tiers:
        baseline = [r["val_bpb"] for r in table if r["status"] == "baseline" and r["tier"] == tier]
        trial, frontier = frontier_measured(table, tier)
        compared = compare(table, tier) or Comparison(math.nan, math.nan, 0)  # (a tier has a baseline)
        results.append(TierResult(tier, baseline, frontier, trial, compared))
    return results


def keep_rule(c: Any) -> str:
    """The campaign's keep rule in words (`c`: its campaign config; older ones lack the z's)."""
    numbers = thresholds(c)
    floor = f"and by at least {numbers['min_delta']:g} val_bpb"
    screened = f"its one run beats the frontier (seed for seed where sharper) by {numbers['promote_z']:g} x seed noise"
    if not c.validate_seeds:
        return f"kept when {screened} {floor}"
    return (
        f"promoted when {screened}; kept when {c.validate_seeds} re-runs beat its runs on the same "
        f"seeds by {numbers['keep_z']:g} standard errors, {floor}"
    )


def build_report(
    study: optuna.Study, campaign_dir: Path, cfg: Any, ended: str | None = None
) -> CampaignReport:
    """Gather the report's facts; `cfg` is the campaign's config (the dataclass or its config.yaml).
    `ended`: why the controller writing it stops, which controller.json says only after the report."""
    table = [r for r in rows(study) if r["status"] != "skip"]  # skipped: never ran, nothing to report
    done = {t.number: t for t in trials(study, TrialState.COMPLETE, TrialState.FAIL)}
    reruns = {
        trial: {tier: values for tier, values in by_tier.items() if names_a_tier(tier)}
        for trial, by_tier in rerun_values(table).items()
    }
    kept = [
        _kept_change(campaign_dir, done[r["trial"]], reruns.get(r["trial"], {}))
        for r in table
        if r["status"] == "keep"
    ]
    undecided = ran_undecided(study)
    ran = [t for t in [*done.values(), *undecided] if experiment_ran(t)]
    intervals = [
        (t.user_attrs.get("launched_at") or t.user_attrs["started_at"], t.user_attrs["ended_at"]) for t in ran
    ]
    waited = sum(
        max(0.0, t.user_attrs["started_at"] - launched)
        for t, (launched, _) in zip(ran, intervals, strict=True)
    )
    hours = spent_hours(study)
    prices = pool_prices(cfg)
    reasons = Counter(str(r["reason"])[:120] for r in table if r["status"] in FAILED)
    c = cfg.campaign
    settings = {
        "scale": str(c.scale),
        "data": str(c.data),
        "training seconds per experiment": f"{time_budget_seconds(cfg):g}",
        "proposer": str(cfg.agent.kind) + (f" ({cfg.agent.model})" if cfg.agent.kind == "claude" else ""),
        "tiers": ", ".join(f"{tier}: {pool}" for tier, pool in cfg.cluster.tiers.items()),
        "keep rule": keep_rule(c),
    }
    if changed := changes_said(list(done.values()), thresholds(c)):
        settings["keep rule"] += f" (today's config); {changed}"
    return CampaignReport(
        name=study.study_name,
        settings=settings,
        started_at=float(study.user_attrs.get("started_at", 0.0)),
        last_result_at=max((t.user_attrs["ended_at"] for t in ran), default=None),
        running=len(trials(study, TrialState.RUNNING)) - len(undecided),
        queued=len(trials(study, TrialState.WAITING)),
        counts=dict(Counter(r["status"] for r in table)),
        ran=len(ran),
        tiers=_tier_results(table),
        rated_hours=hours,
        gpu_types=pool_gpu_types(ran),
        prices=prices,
        unpriced_hours=hours_without_price(ran, earlier_prices(study), prices),
        llm=usage_totals(campaign_dir),
        speedup=Speedup(sum(hours.values()), busy_hours(intervals), waited / 3600),
        kept=kept,
        failure_reasons=reasons.most_common(MAX_REASONS),
        controller=controller_state(campaign_dir) if ended is None else stopped_line(time.time(), ended),
        awaiting=len(undecided),
    )


def write_report(
    study: optuna.Study, campaign_dir: Path, cfg: Any, out_dir: Path | None = None, ended: str | None = None
) -> CampaignReport:
    """Re-draw progress.png and write report.html (the plot embedded: one file to mail or attach),
    in the campaign folder or in `out_dir` (made if missing: for a campaign folder read-only);
    `ended` as for `build_report`. The report written, for what else says its figures."""
    report = build_report(study, campaign_dir, cfg, ended)
    save_report(report, rows(study), campaign_dir if out_dir is None else out_dir)
    return report


def save_report(report: CampaignReport, table: list[dict[str, Any]], out_dir: Path) -> Path:
    """`write_report`'s writes alone, of what was read before: a file of the campaign that cannot
    be read is not a report that cannot be written."""
    from autoresearch.report_html import render_html

    if (
        out_dir.exists() and not out_dir.is_dir()
    ):  # (mkdir's error would say "File exists", as if the page did)
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(out_dir))
    out_dir.mkdir(parents=True, exist_ok=True)
    plot = out_dir / "progress.png"
    if table:  # (only a plot drawn now: a progress.png already in an --out folder may be another's)
        plot_progress(table, plot, report.name)
    path = out_dir / REPORT_FILE
    write_atomic(path, render_html(report, plot.read_bytes() if table else None))
    return path


def main() -> None:
    from autoresearch.cli import reader_may_stop_early, tool_name
    from autoresearch.report_text import headline
    from autoresearch.status import reading_campaign, reads_allowed, refuse

    parser = argparse.ArgumentParser(prog=tool_name("report"), description=DESCRIPTION)
    parser.add_argument("campaign_dir", type=Path, help="runs/<campaign name>")
    parser.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="write report.html and progress.png in DIR instead of the campaign folder "
        "(for a folder you cannot write: a colleague's campaign, a read-only archive)",
    )
    args = parser.parse_args()
    # (reading_campaign also refuses a config.yaml a setting was removed from by an edit)
    with reads_allowed(), reading_campaign(args.campaign_dir) as (study, config):
        report, table = build_report(study, args.campaign_dir, config), rows(study)
        try:
            path = save_report(report, table, args.campaign_dir if args.out is None else args.out)
        except OSError as err:  # (a read-only mount: a colleague's campaign, an archive)
            where, instead = (
                (args.campaign_dir, "write it elsewhere with --out DIR")
                if args.out is None
                else (args.out, "choose another --out DIR")
            )
            refuse(f"cannot write the report in {where}: {write_failure(err, where)}; {instead}")
    with reader_may_stop_early():  # (`| head -1`, for the path alone)
        print("\n".join([str(path), *headline(report)]))


if __name__ == "__main__":
    main()
