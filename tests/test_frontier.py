"""The frontier's git lineage: which commit kept which trial, read back after a restart."""

from __future__ import annotations

from pathlib import Path

from autoresearch.frontier import Frontier


def test_the_commit_that_kept_a_trial_is_known_before_and_after_a_restart(tmp_path: Path) -> None:
    frontier = Frontier(tmp_path / "frontier", "A = 1\n")
    assert frontier.commit_of_trial(1) is None  # nothing kept yet
    first = frontier.advance("A = 2\n", 12, "a: twelve")
    second = frontier.advance("A = 3\n", 1, "b")
    assert (frontier.commit_of_trial(12), frontier.commit_of_trial(1)) == (first, second)
    reopened = Frontier(tmp_path / "frontier", "ignored: the lineage exists")
    assert (reopened.commit_of_trial(12), reopened.commit_of_trial(1)) == (first, second)
    assert reopened.commit_of_trial(2) is None and reopened.head() == second
    assert reopened.source_at(first) == "A = 2\n" and reopened.start_source() == "A = 1\n"
