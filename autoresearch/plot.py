"""progress.png: every experiment as a dot, kept ones highlighted, the running best as a step line."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_progress(table: list[dict[str, Any]], path: Path, title: str) -> None:
    """The screen tier's experiments (the search itself); validation re-runs live in results.tsv."""
    ran = [
        (i, r)
        for i, r in enumerate(table)
        if r["status"] in ("keep", "discard", "baseline") and r["tier"] in ("screen", "")
    ]
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=110)
    for status, color, size in (
        ("discard", "#b0b0b0", 14),
        ("stack", "#f0a030", 18),
        ("keep", "#1a9850", 36),
    ):
        pts = [(i, r["val_bpb"]) for i, r in ran if r["status"] == status]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.scatter(xs, ys, s=size, c=color, label=status, zorder=3)
    # The frontier as the policy sees it: the baseline mean, then each kept value.
    best_x, best_y, baselines, kept = [], [], [], None
    for i, r in ran:
        if r["status"] == "baseline":
            baselines.append(r["val_bpb"])
        elif r["status"] == "keep":
            kept = r["val_bpb"]
        if kept is not None or baselines:
            best_x.append(i)
            best_y.append(kept if kept is not None else sum(baselines) / len(baselines))
    if best_x:
        ax.step(best_x, best_y, where="post", color="#1a9850", lw=1.5, label="frontier")
    baseline = [(i, r["val_bpb"]) for i, r in ran if r["status"] == "baseline"]
    if baseline:
        xs, ys = zip(*baseline, strict=True)
        ax.scatter(xs, ys, s=30, c="#2c7bb6", marker="s", label="baseline", zorder=3)
    crashes = sum(1 for r in table if r["status"] == "crash")
    experiments = sum(1 for r in table if r["status"] not in ("skip", "invalid"))  # those that ran
    ax.set_xlabel("experiment (in order of completion)")
    ax.set_ylabel("val_bpb (lower is better)")
    ax.set_title(f"{title}: {experiments} experiments, {crashes} crashed")
    ax.grid(alpha=0.3)
    if ran:
        ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
