"""The frontier's git lineage: which commit kept which trial, read back after a restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoresearch.frontier import Frontier, FrontierError


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


def test_a_git_failure_is_one_line_with_gits_own_words(tmp_path: Path) -> None:
    frontier = Frontier(tmp_path / "frontier", "A = 1\n")
    with pytest.raises(FrontierError) as failed:
        frontier.source_at("0123456789ab")
    said = str(failed.value)
    assert said.startswith(f"git show failed in the frontier {tmp_path / 'frontier'}: fatal: ")
    assert "0123456789ab" in said and "\n" not in said and said.endswith("then run the command again")


def test_a_controller_killed_before_its_commit_resumes_on_the_committed_train_py(tmp_path: Path) -> None:
    frontier = Frontier(tmp_path / "frontier", "A = 1\n")
    kept = frontier.advance("A = 2\n", 3, "kept")
    (tmp_path / "frontier" / "train.py").write_text("A = 3\n")  # trial 4's, written; then killed
    reopened = Frontier(tmp_path / "frontier", "ignored: the lineage exists")
    assert reopened.head() == kept and reopened.source() == "A = 2\n" == reopened.source_at(kept)
    assert (tmp_path / "frontier" / "train.py").read_text() == "A = 2\n"
    assert reopened.commit_of_trial(4) is None
    assert reopened.source_at(reopened.advance("A = 3\n", 4, "kept again")) == "A = 3\n"


def test_a_description_with_control_characters_is_kept_and_resumed_as_one_line(tmp_path: Path) -> None:
    """git refuses a commit message holding a NUL: a description an older check let through must
    neither crash the keep nor every resume after it."""
    frontier = Frontier(tmp_path / "frontier", "A = 1\n")
    kept = frontier.advance("A = 2\n", 7, "LR 0.01 -> 0.04\u0000\nand more")
    reopened = Frontier(tmp_path / "frontier", "ignored: the lineage exists")
    assert reopened.commit_of_trial(7) == kept == reopened.head()
    subject = reopened._git("log", "-1", "--format=%B")
    assert subject == "trial 7: LR 0.01 -> 0.04  and more"
