"""progress.png: each result on the screen tier as a dot, kept ones highlighted, the running best as a step line."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from autoresearch.files import replacing  # noqa: E402
from autoresearch.results import measurements, row_ran  # noqa: E402


def plot_title(table: list[dict[str, Any]], name: str) -> str:
    """The campaign, the experiments that ran (as report.html counts them: not those lost or
    cancelled before they started) and how many crashed."""
    crashes = sum(1 for r in table if r["status"] == "crash")
    ran = sum(1 for r in table if row_ran(r))
    return f"{name}: {ran} experiment{'' if ran == 1 else 's'}, {crashes} crashed"


def screen_points(table: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """The screen tier's results (the search itself; the validate tier's live in results.tsv), each
    at its place among the experiments that ran, 1 the first to end: candidates skipped or refused
    never ran and take no place, so the axis ends at the title's count."""
    ran = [r for r in table if row_ran(r)]
    return [
        (n, r)
        for n, r in enumerate(ran, start=1)
        if r["status"] in ("keep", "discard", "baseline", "rerun") and r["tier"] in ("screen", "")
    ]


def plot_progress(table: list[dict[str, Any]], path: Path, title: str) -> None:
    fig = progress_figure(table, title)
    try:
        with replacing(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)


def progress_figure(table: list[dict[str, Any]], title: str) -> Figure:
    """The plot, drawn; the caller closes it (pyplot keeps every figure open until then)."""
    ran = screen_points(table)
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=110)
    for status, label, color, size in (
        ("discard", "discard", "#b0b0b0", 14),
        ("rerun", "re-run", "#9ecae1", 14),
        ("keep", "keep", "#1a9850", 36),
    ):
        pts = [(i, r["val_bpb"]) for i, r in ran if r["status"] == status]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.scatter(xs, ys, s=size, c=color, label=label, zorder=3)
    # The frontier as the policy judges by it: the baseline's mean, then each kept version's.
    best_x, best_y, baselines, kept = [], [], [], None
    for i, r in ran:
        if r["status"] == "baseline":
            baselines.append(r["val_bpb"])
        elif r["status"] == "keep":
            kept = statistics.fmean(measurements(table, r["version"], r["tier"]))
        if kept is not None or baselines:
            best_x.append(i)
            best_y.append(kept if kept is not None else statistics.fmean(baselines))
    if len(best_x) > 1:  # (one point is no line: a legend's "frontier" would name nothing drawn)
        ax.step(best_x, best_y, where="post", color="#1a9850", lw=1.5, label="frontier")
    baseline = [(i, r["val_bpb"]) for i, r in ran if r["status"] == "baseline"]
    if baseline:
        xs, ys = zip(*baseline, strict=True)
        ax.scatter(xs, ys, s=30, c="#2c7bb6", marker="s", label="baseline", zorder=3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # experiments are counted: no 2.5th
    if len(ran) == 1:  # (matplotlib's axis around one point is a tenth wide: its own tick alone)
        ax.set_xticks([ran[0][0]])
    ax.set_xlabel("experiment (in order of completion)")
    ax.set_ylabel("val_bpb: validation bits per byte (lower is better)")
    ax.set_title(plot_title(table, title))
    ax.grid(alpha=0.3)
    if ran:
        ax.legend(loc="best", fontsize=8)  # where it hides the fewest results
    fig.tight_layout()
    return fig
