"""Nodes that cannot run experiments, kept out of a partition's new Slurm jobs.

A node whose jobs see no GPU (the harness's check: a driver older than torch's CUDA, a GPU gone
from the node) fails each experiment in seconds, and Slurm, finding it free again at once, sends
it the next one: a black hole that would take the whole queue. Such a node is excluded from the
partition's new jobs, but only once another node of that partition has run an experiment to a
result. When none has, the fault may be the setup's, and the campaign should stop on it (every
baseline lost) rather than leave a partition with no node to run on.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any


class NodeHealth:
    def __init__(self) -> None:
        self.unfit: dict[str, dict[str, str]] = defaultdict(dict)  # pool -> node -> its job's reason
        self.fit: dict[str, set[str]] = defaultdict(set)  # pool -> nodes that ran an experiment to a result
        self.excluded: dict[str, set[str]] = defaultdict(set)

    def note(self, pool: str, outcome: dict[str, Any]) -> set[str]:
        """Record where a finished experiment of `pool` ran; returns the nodes this newly excludes."""
        node = outcome.get("node")
        if not node:
            return set()
        unfit = self.unfit[pool]
        if outcome.get("node_unfit"):
            unfit[node] = outcome.get("reason", "")
        elif outcome.get("status") == "ok":
            self.fit[pool].add(node)
        if not self.fit[pool] - unfit.keys():
            return set()  # no node of the partition known to work: excluding could leave it none
        newly = unfit.keys() - self.excluded[pool]
        self.excluded[pool] |= newly
        return newly


def exclude_list(configured: str, excluded: set[str]) -> str:
    """Slurm's --exclude value: the partition's own list plus the nodes found unfit."""
    return ",".join(sorted({*filter(None, configured.split(",")), *excluded}))
