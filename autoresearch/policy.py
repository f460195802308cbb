"""Keep or discard: the noise-aware rule that turns measurements into decisions.

A change is judged twice. Screening: its one run must beat the frontier by `promote_z` standard
deviations of the difference (seed noise, pooled from repeated runs on that tier) and by at least
`min_delta`; a run that passes is promoted. Confirmation: the promoted change runs again with fresh
seeds, and is kept only when the mean of those runs beats the frontier's mean by `keep_z` standard
errors and by `min_delta`. The screening run is left out of the confirmation because it was picked
for being low. Without a noise estimate yet, `min_delta` alone decides. The campaign holds the
queue, the seeds and the frontier; this module holds only the arithmetic, so the simulator and a
stricter rule can replace it.
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
    def screen(self, val_bpb: float, frontier: list[float], noise: float | None) -> Verdict: ...

    def confirm(self, runs: list[float], frontier: list[float], noise: float | None) -> Verdict: ...


@dataclass(frozen=True)
class NoiseAwarePolicy:
    min_delta: float  # the smallest improvement worth keeping, whatever the noise
    promote_z: float = 1.0  # screening: standard deviations one run must beat the frontier by
    keep_z: float = 2.0  # confirmation: standard errors the mean must beat the frontier's by

    def screen(self, val_bpb: float, frontier: list[float], noise: float | None) -> Verdict:
        return self._judge([val_bpb], frontier, noise, self.promote_z)

    def confirm(self, runs: list[float], frontier: list[float], noise: float | None) -> Verdict:
        return self._judge(runs, frontier, noise, self.keep_z)

    def _judge(self, runs: list[float], frontier: list[float], noise: float | None, z: float) -> Verdict:
        delta = statistics.fmean(runs) - statistics.fmean(frontier)
        std_error = noise * math.sqrt(1 / len(runs) + 1 / len(frontier)) if noise else 0.0
        margin = max(self.min_delta, z * std_error)
        over = f" over {len(runs)} runs" if len(runs) > 1 else ""
        against = f"frontier {statistics.fmean(frontier):.4f} ({len(frontier)} runs)"
        why = "min_delta" if margin == self.min_delta else f"{z:g} x noise {noise:.4f}"
        d = _decimals_apart(delta, -margin)
        return Verdict(
            delta < -margin, f"{delta:+.{d}f}{over} vs {against}; needed < -{margin:.{d}f} ({why})"
        )


def _decimals_apart(a: float, b: float) -> int:
    """4 decimals, or up to 6 where a reader needs them to see which of `a` and `b` is the smaller
    ("-0.0100; needed < -0.0100" hid a verdict); a tie at 6 is shown as one at 4."""
    return next((d for d in (4, 5, 6) if f"{a:.{d}f}" != f"{b:.{d}f}"), 4)


def pooled_noise(groups: list[list[float]]) -> float | None:
    """Seed-to-seed standard deviation, pooled over groups of runs of one train.py each."""
    dof = sum(len(g) - 1 for g in groups if len(g) > 1)
    if dof == 0:
        return None
    squares = sum(sum((x - statistics.fmean(g)) ** 2 for x in g) for g in groups if len(g) > 1)
    return math.sqrt(squares / dof)
