"""Keep or discard: the rule that turns a result into a decision.

Behind a small interface so the noise-aware, tiered policy and the simulator can replace it. The
rule here: keep when val_bpb beats the frontier on the same tier by at least `min_delta`, and the
experiment was built on the current frontier; a winner built on an older frontier is re-run on top
of the current one (stacked) rather than kept unmeasured.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Decision:
    status: str  # keep | discard | stack (re-run on the current frontier) | pending (no frontier value yet)
    reason: str


class Policy(Protocol):
    def decide(self, val_bpb: float, parent: str, head: str, frontier_value: float | None) -> Decision: ...


@dataclass(frozen=True)
class ThresholdPolicy:
    min_delta: float

    def decide(self, val_bpb: float, parent: str, head: str, frontier_value: float | None) -> Decision:
        if frontier_value is None:
            return Decision("pending", "no frontier value on this tier yet")
        delta = val_bpb - frontier_value
        if delta > -self.min_delta:
            return Decision("discard", f"{delta:+.4f} vs frontier {frontier_value:.4f}")
        if parent != head:
            return Decision("stack", f"{delta:+.4f} vs frontier, but built on an older frontier")
        return Decision("keep", f"{delta:+.4f} vs frontier {frontier_value:.4f}")


def noise_std(values: list[float]) -> float | None:
    """Seed-to-seed standard deviation from repeated measurements of one version."""
    return statistics.stdev(values) if len(values) >= 2 else None
