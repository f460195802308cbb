"""A tier's results are held to the hardware they were measured on (`hardware_changes`)."""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial

from autoresearch.fleet.base import UNNAMED_GPU, Pool
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


def test_a_gpu_nvidia_smi_did_not_name_once_neither_holds_a_tier_nor_is_refused() -> None:
    """A local GPU's type is nvidia-smi's name for it, "gpu" where nvidia-smi timed out: a start
    that hit the timeout once must not hold the tier to "gpu" for ever, nor be refused itself."""
    named = Pool("local", 1, "NVIDIA H100 80GB HBM3")
    unnamed = Pool("local", 1, UNNAMED_GPU)
    on_named = measured({"tier": "screen", "hardware": hardware_of(named)})
    on_unnamed = measured({"tier": "screen", "gpu_type": UNNAMED_GPU})  # an older version's run
    assert hardware_changes(on_named, {"screen": "local"}, {"local": unnamed}, "runs/x") == []
    assert hardware_changes(on_unnamed, {"screen": "local"}, {"local": named}, "runs/x") == []
    assert len(hardware_changes(on_named, {"screen": "local"}, {"local": POOLS["h100"]}, "runs/x")) == 1
