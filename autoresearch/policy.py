"""Keep or discard: the noise-aware rule that turns measurements into decisions.

A change is judged twice. Screening: its one run must beat the frontier by `promote_z` standard
deviations of the difference (seed noise, pooled from repeated runs on that tier) and by at least
`min_delta`; a run that passes is promoted. Confirmation: the promoted change runs again with other
seeds, and is kept only when the mean of those runs beats the frontier's by `keep_z` standard
errors and by `min_delta`. The screening run is left out of the confirmation because it was picked
for being low. Runs on the same seeds as the frontier's are compared in pairs, by the noise of
their differences once it is measured (`Pairs`), where that asks for clearly less than comparing
them as independent runs. Without a noise estimate yet, `min_delta` alone decides. The campaign
holds the queue, the seeds and the frontier; this module holds only the arithmetic, so the
simulator and a stricter rule can replace it.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Verdict:
    better: bool  # beats the frontier by the margin the rule asks for
    reason: str


class Policy(Protocol):
    def screen(
        self, val_bpb: float, frontier: list[float], noise: float | None, pairs: Pairs | None = None
    ) -> Verdict: ...

    def confirm(
        self, runs: list[float], frontier: list[float], noise: float | None, pairs: Pairs | None = None
    ) -> Verdict: ...


# Fewer degrees of freedom than this and a paired noise estimate is not trusted: one difference
# from its mean says little, and the t quantile at 1 dof (12.7 for 95%) is far from any short series.
MIN_PAIR_DOF = 2
# Runs are compared seed for seed only where that asks for at most this share of the margin of
# comparing them as independent runs: both margins rest on noise estimates, and the smaller of two
# estimates is the likelier one to be too small. Where versions share none of a seed's luck the
# paired margin is larger by a third and more; where they share 80% of it, about half as large.
PAIRED_EDGE = 0.75


@dataclass(frozen=True)
class Pairs:
    """The frontier's runs with the change's seeds (`frontier`, in the order of the change's runs):
    the share of the noise a seed draws alike for both versions cancels in each difference.
    `noise`: the std of such a difference, pooled over the campaign's pairs so far with `dof`
    degrees of freedom."""

    noise: float | None
    dof: int = 0
    frontier: tuple[float, ...] = ()


@dataclass(frozen=True)
class NoiseAwarePolicy:
    min_delta: float  # the smallest improvement worth keeping, whatever the noise
    promote_z: float = 1.0  # screening: standard deviations one run must beat the frontier by
    keep_z: float = 2.0  # confirmation: standard errors the mean must beat the frontier's by

    def screen(
        self, val_bpb: float, frontier: list[float], noise: float | None, pairs: Pairs | None = None
    ) -> Verdict:
        return self._judge([val_bpb], frontier, noise, self.promote_z, pairs)

    def confirm(
        self, runs: list[float], frontier: list[float], noise: float | None, pairs: Pairs | None = None
    ) -> Verdict:
        return self._judge(runs, frontier, noise, self.keep_z, pairs)

    def _judge(
        self,
        runs: list[float],
        frontier: list[float],
        noise: float | None,
        z: float,
        pairs: Pairs | None = None,
    ) -> Verdict:
        """The runs against all the frontier's as independent runs, or seed for seed (`pairs`) where
        that asks for clearly less (`PAIRED_EDGE`): the luck both sides draw alike at a seed cancels,
        but one version's runs differ from another's by more than two independent runs do where
        they share little of it, and the noise of the differences is estimated from fewer runs.
        Which one is read from the noise estimates alone, never from the runs being judged."""
        independent = z * noise * math.sqrt(1 / len(runs) + 1 / len(frontier)) if noise else None
        if pairs and pairs.noise is not None and pairs.dof >= MIN_PAIR_DOF:
            # The noise is estimated from few pairs: z standard errors become Student t's.
            t = t_quantile(z, pairs.dof)
            paired = t * pairs.noise / math.sqrt(len(runs))
            if independent is None or paired <= PAIRED_EDGE * independent:
                scale = f"{z:g} x paired noise {pairs.noise:.4f}; t at {pairs.dof} dof: {t:.2f}"
                same = f"on the same seed{'s' if len(runs) > 1 else ''}"
                return self._verdict(runs, list(pairs.frontier), paired, scale, same)
        scale = f"{z:g} x noise {noise:.4f}" if noise else ""
        return self._verdict(runs, frontier, independent or 0.0, scale, f"({len(frontier)} runs)")

    def _verdict(
        self, runs: list[float], frontier: list[float], spread: float, scale: str, runs_of: str
    ) -> Verdict:
        delta = statistics.fmean(runs) - statistics.fmean(frontier)
        margin = max(self.min_delta, spread)
        over = f" (mean {statistics.fmean(runs):.4f} over {len(runs)} runs)" if len(runs) > 1 else ""
        against = f"frontier {statistics.fmean(frontier):.4f} {runs_of}"
        why = "min_delta" if margin == self.min_delta else scale
        d = _decimals_apart(delta, -margin)
        return Verdict(
            delta < -margin, f"{delta:+.{d}f}{over} vs {against}; needed < -{margin:.{d}f} ({why})"
        )


def _decimals_apart(a: float, b: float) -> int:
    """4 decimals, or up to 6 where a reader needs them to see which of `a` and `b` is the smaller
    ("-0.0100; needed < -0.0100" hid a verdict); a tie at 6 is shown as one at 4."""
    return next((d for d in (4, 5, 6) if f"{a:.{d}f}" != f"{b:.{d}f}"), 4)


def t_quantile(z: float, dof: int) -> float:
    """Student's t quantile at the probability of the normal quantile `z`: the standard errors `z`
    stands for when the noise is itself estimated, with `dof` degrees of freedom (Cornish-Fisher
    expansion; within 4% of the exact quantile from 2 degrees of freedom, and closer above)."""
    z3, z5, z7 = z**3, z**5, z**7
    return (
        z
        + (z3 + z) / (4 * dof)
        + (5 * z5 + 16 * z3 + 3 * z) / (96 * dof**2)
        + (3 * z7 + 19 * z5 + 17 * z3 - 15 * z) / (384 * dof**3)
    )


def degrees_of_freedom(groups: list[list[float]]) -> int:
    """What a noise pooled over these groups of repeated runs is estimated from."""
    return sum(len(g) - 1 for g in groups if len(g) > 1)


def pooled_noise(groups: list[list[float]]) -> float | None:
    """Seed-to-seed standard deviation, pooled over groups of runs of one train.py each."""
    dof = degrees_of_freedom(groups)
    if dof == 0:
        return None
    squares = sum(sum((x - statistics.fmean(g)) ** 2 for x in g) for g in groups if len(g) > 1)
    return math.sqrt(squares / dof)
