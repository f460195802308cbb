"""The trainer's scripts: bench_trainer.py runs the real harness; seed_noise.py reports any seed count."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import pytest
from engine_helpers import REPO, load_script
from trainer_helpers import TRAINER_DIR


def test_bench_uses_the_harness_of_trainer_even_beside_another(
    use_offline_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An edited train.py kept in a folder with a prepare.py of its own still runs on trainer/'s."""
    monkeypatch.delenv("AUTORESEARCH_SEED", raising=False)
    folder = tmp_path / "edited"
    folder.mkdir()
    (folder / "train.py").write_text((TRAINER_DIR / "train.py").read_text())
    (folder / "prepare.py").write_text("raise SystemExit('the wrong harness')\n")
    result = load_script("bench_trainer").bench("cpu", 1.0, 1, folder / "train.py", None)
    assert result["prepare_sha256"] == hashlib.sha256((TRAINER_DIR / "prepare.py").read_bytes()).hexdigest()
    assert result["num_steps"] > 1 and math.isfinite(result["val_bpb"])


def test_bench_states_the_limits_the_harness_holds_a_run_to() -> None:
    """The 12 steps of slack are capped at half the budget (BUDGET_SLACK_MAX): a label without the
    cap promised a GPU session a limit the harness does not give with long steps."""
    label = load_script("bench_trainer")._harness_count({"harness_train_seconds": 15.31})
    assert label.startswith("15.3 s") and "12 steps, those at most half the budget" in label
    label = load_script("bench_trainer")._harness_uncounted({"harness_uncounted_seconds": 41.04})
    assert label == "41.0 s (at most half the budget, on a GPU at least 90 s)"


def test_bench_appends_each_runs_output_to_its_log_and_ends_on_a_failure_with_its_tail(
    tmp_path: Path,
) -> None:
    """Several runs share one log (the GPU session's runs.log), each as it runs; a failed run stops
    the script with the end of its output, not with an empty message."""
    bench = load_script("bench_trainer").bench
    log = tmp_path / "runs.log"
    log.write_text("an earlier run's output\n" * 3)
    failing = tmp_path / "train.py"
    failing.write_text(
        "print('step 1 of a run about to fail', flush=True)\nraise SystemExit('FAIL: planted')\n"
    )
    with pytest.raises(SystemExit) as failed:
        bench("cpu", 1.0, 1, failing, log)
    # Its own output only, not the earlier runs' in the shared log.
    assert str(failed.value) == "train.py failed (1):\nstep 1 of a run about to fail\nFAIL: planted\n"
    lines = log.read_text().splitlines()
    assert lines[:4] == ["an earlier run's output"] * 3 + [f"== {failing} (cpu scale, 1 s)"]
    assert lines[4:] == ["step 1 of a run about to fail", "FAIL: planted"]


def test_seed_noise_reports_a_single_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    """With one seed there is no spread to report: nan, not a crash after every run finished."""
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    seed_noise = load_script("seed_noise")
    results = {("train.py", 42): (2.1, 80), ("LR=1", 42): (2.0, 81)}
    lines = seed_noise.report(results, ["train.py", "LR=1"], [42])
    assert lines[1].split() == ["42", "2.1000", "2.0000"]
    assert (
        "std over seeds nan" in lines[2] and "minus train.py seed for seed: mean -0.1000, std nan" in lines[3]
    )
