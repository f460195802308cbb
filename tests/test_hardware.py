"""A tier's results are held to the hardware they were measured on (`hardware_changes`)."""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial

from autoresearch.fleet.base import Pool
from autoresearch.hardware import hardware_changes, hardware_of

POOLS = {
    "h100": Pool("h100", 4, "h100"),
    "h200": Pool("h200", 4, "h200"),
    "cpu": Pool("cpu", 2, "cpu", threads=8),
}


def measured(*attrs: dict[str, object]) -> list[FrozenTrial]:
    """Finished trials of a real (in-memory) study, with these attributes and a val_bpb each."""
    study = optuna.create_study()
    for extra in attrs:
        trial = study.ask()
        for key, value in {"val_bpb": 1.0, **extra}.items():
            trial.set_user_attr(key, value)
        study.tell(trial, 1.0)
    return study.trials


def test_a_tier_moved_to_another_gpu_type_is_named_and_one_not_yet_measured_may_move() -> None:
    trials = measured({"tier": "screen", "hardware": "h100"}, {"tier": "validate", "hardware": "h100"})
    problems = hardware_changes(
        trials, {"screen": "h200", "validate": "h100", "probe": "h200"}, POOLS, "runs/x"
    )
    assert len(problems) == 1
    assert problems[0].startswith(
        "the screen tier of runs/x measured on h100, this command runs it on h200 (h200)"
    )


def test_runs_recorded_before_hardware_was_are_known_by_their_gpu_type_but_not_on_cpus() -> None:
    """An older version recorded a run's gpu_type only: enough for a GPU, not for CPU threads."""
    trials = measured({"tier": "screen", "gpu_type": "h100"}, {"tier": "validate", "gpu_type": "cpu"})
    assert hardware_changes(trials, {"screen": "h100", "validate": "cpu"}, POOLS, "runs/x") == []
    assert len(hardware_changes(trials, {"screen": "cpu", "validate": "cpu"}, POOLS, "runs/x")) == 1


def test_cpu_hardware_counts_threads_and_a_gpu_does_not() -> None:
    assert hardware_of(POOLS["cpu"]) == "cpu, 8 threads per slot"
    assert hardware_of(Pool("gpu", 1, "h100", threads=8)) == "h100"
    assert hardware_of(Pool("sim", 1, "cpu")) == "cpu"  # threads the fleet does not set
