"""The keep rule's numbers each decision was judged by.

A resume may change `min_delta`, `promote_z` or `keep_z`; the saved config.yaml then holds only the
latest. So each decided trial records the numbers it was judged by (`THRESHOLDS_ATTR`), and the
report says from which trial they changed instead of implying one rule throughout.
"""

from __future__ import annotations

from typing import Any

from optuna.trial import FrozenTrial

THRESHOLDS_ATTR = "thresholds"


def thresholds(c: Any) -> dict[str, float]:
    """The numbers of a campaign config's keep rule (`c`: the dataclass, or an older config.yaml
    that lacks the z's: their defaults then)."""
    return {
        "min_delta": float(c.min_delta),
        "promote_z": float(getattr(c, "promote_z", 1.0)),
        "keep_z": float(getattr(c, "keep_z", 2.0)),
    }


def spans(decided: list[FrozenTrial]) -> list[tuple[int, int, dict[str, float]]]:
    """(first trial, last trial, thresholds): trials in order of number, together while they were
    judged by the same numbers; a trial decided before they were recorded is left out."""
    runs: list[tuple[int, int, dict[str, float]]] = []
    for t in sorted(decided, key=lambda t: t.number):
        numbers = t.user_attrs.get(THRESHOLDS_ATTR)
        if numbers is None:
            continue
        if runs and runs[-1][2] == numbers:
            runs[-1] = (runs[-1][0], t.number, numbers)
        else:
            runs.append((t.number, t.number, numbers))
    return runs


def changes_said(decided: list[FrozenTrial], now: dict[str, float]) -> str:
    """'' where every decision was judged by today's numbers (`now`); else which numbers judged
    which trials, for a report that states today's rule."""
    judged = spans(decided)
    if all(numbers == now for _, _, numbers in judged):
        return ""
    parts = [
        f"trial{'s' if first != last else ''} {first}{f'-{last}' if first != last else ''}: "
        + ", ".join(f"{name} {value:g}" for name, value in numbers.items())
        for first, last, numbers in judged
    ]
    return "the thresholds changed during the campaign; decisions were judged by " + "; ".join(parts)
