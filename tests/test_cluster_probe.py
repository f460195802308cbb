"""The suite's probe of the local Slurm cluster (conftest.slurm_cluster_problem) reads node states
as Slurm prints them, flags included, so a job completing never reads as a cluster that is down."""

from __future__ import annotations

import pytest
from conftest import node_state_usable


@pytest.mark.parametrize("state", ["idle", "mixed", "allocated", "allocated+", "completing", "planned"])
def test_a_node_that_takes_jobs_is_usable(state: str) -> None:
    assert node_state_usable(state)
    assert node_state_usable(f" {state}\n")  # as sinfo's line ends


@pytest.mark.parametrize(
    "state", ["down", "down*", "drained", "draining", "allocated*", "idle*", "idle~", "unknown", "fail"]
)
def test_a_node_down_drained_or_not_responding_is_not(state: str) -> None:
    assert not node_state_usable(state)
