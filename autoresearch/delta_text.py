"""How a change in val_bpb is written, one way for the report and the agent's prompt, so that
Claude reads the figure a user reads in report.html."""

from __future__ import annotations

import math


def signed(value: float, digits: int = 6) -> str:
    """A change in val_bpb with its sign; one that is no number (a study edited, or written by
    another version) says so, where "+nan" would read as a figure."""
    return f"{value:+.{digits}f}" if math.isfinite(value) else "n/a (val_bpb not a number)"
