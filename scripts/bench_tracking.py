"""Can `tracking=wandb` keep up with a fleet? Time the tracker's thread per experiment.

Builds a study of finished experiments, each with a run.log of `--points` progress lines as
train.py prints them (one a second after 10 warm-up steps: 310 for a 5-minute run) and a
train.diff, and sends them with the real `WandbTracker` in W&B's offline mode (its real files,
no network). Prints, per curve length: the seconds per experiment (wandb.init, then logging the
curve, files, summary and finish), the experiments per second the thread sustains, and the fleet
that rate serves at `--experiment-minutes` per experiment; then how long W&B's service took, at
exit, to write out what the thread had handed it. The first experiment of a process (W&B's
import and service start, about a second) is left out of the rate. Online, each run adds W&B's
round trips on top, which this does not measure.

    python scripts/bench_tracking.py --runs 30 --points 310 6000 --max-points 1000000000 1000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState, create_trial

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project's package, installed or not

from autoresearch import tracking  # noqa: E402
from autoresearch.config import TrackingConfig  # noqa: E402


class TimedTracker(tracking.WandbTracker):
    """The real tracker, noting when each experiment's wandb.init returned and when it was done."""

    def __init__(self, *args: Any) -> None:
        self.marks: list[tuple[str, float]] = []
        super().__init__(*args)

    def _init(self, suffix: str, **kwargs: Any) -> Any:
        self.marks.append(("start", time.perf_counter()))
        run = super()._init(suffix, **kwargs)
        self.marks.append(("init", time.perf_counter()))
        return run

    def _sent(self, number: int) -> None:
        super()._sent(number)
        self.marks.append(("sent", time.perf_counter()))

    def per_run(self) -> list[tuple[float, float]]:
        """(seconds in wandb.init, seconds in all) of each experiment, in order."""
        stamps = [t for _, t in self.marks]
        return [(stamps[i + 1] - stamps[i], stamps[i + 2] - stamps[i]) for i in range(0, len(stamps), 3)]


def progress_lines(points: int) -> str:
    """`points` step lines as train.py prints them (loss falling, throughput steady)."""
    return "".join(
        f"step {s:05d} ({100 * s / points:.1f}%) | loss {4.0 * 0.999**s:.4f} | lrm 1.00 | dt 352 ms "
        f"| tok/s 1,489,{s % 1000:03d} | mfu 36.{s % 10}%\n"
        for s in range(1, points + 1)
    )


def finished_study(campaign: Path, runs: int, points: int) -> optuna.Study:
    study = optuna.create_study(study_name="bench")
    for number in range(runs):
        exp_dir = campaign / "experiments" / f"{number:05d}"
        exp_dir.mkdir(parents=True)
        (exp_dir / "run.log").write_text(progress_lines(points))
        (exp_dir / "train.diff").write_text("-MATRIX_LR = 0.04\n+MATRIX_LR = 0.05\n")
        attrs = {
            "exp_dir": str(exp_dir.relative_to(campaign)),
            "status": "discard",
            "tier": "screen",
            "kind": "experiment",
            "description": f"experiment {number}",
            "knobs": '{"MATRIX_LR": 0.05}',
            "delta": 0.001,
            "training_seconds": 300.0,
        }
        study.add_trial(create_trial(state=TrialState.COMPLETE, value=1.0, user_attrs=attrs))
    return study


def send(campaign: Path, runs: int, points: int) -> list[tuple[float, float]]:
    study = finished_study(campaign, runs, points)
    tracker = TimedTracker(TrackingConfig(kind="wandb", project="bench", mode="offline"), campaign, "bench")
    tracker.update(study)
    tracker.close(None)
    return tracker.per_run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="experiments sent per configuration")
    parser.add_argument("--points", type=int, nargs="+", default=[310], help="progress lines per run.log")
    parser.add_argument(
        "--max-points",
        type=int,
        nargs="+",
        default=[tracking.MAX_CURVE_POINTS],
        help="curve points sent at most (tracking.MAX_CURVE_POINTS); a large value sends them all",
    )
    parser.add_argument("--experiment-minutes", type=float, default=5.0, help="for the fleet size served")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(
        f"{'lines':>6} {'cap':>10} {'sent':>6} {'init s':>7} {'run s':>7} {'max s':>7} {'exp/s':>6} {'GPUs':>6}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        first = True
        for points in args.points:
            for cap in args.max_points:
                tracking.MAX_CURVE_POINTS = cap
                timings = send(Path(tmp) / f"{points}-{cap}", args.runs, points)
                if first:  # the process's first experiment: W&B's import and service start
                    print(f"(first experiment of the process: {timings[0][1]:.2f} s, left out)")
                    timings, first = timings[1:], False
                whole = statistics.mean(w for _, w in timings)
                print(
                    f"{points:>6} {cap:>10} {min(points, cap):>6} {statistics.mean(i for i, _ in timings):>7.3f} "
                    f"{whole:>7.3f} {max(w for _, w in timings):>7.3f} {1 / whole:>6.2f} "
                    f"{args.experiment_minutes * 60 / whole:>6.0f}"
                )
        import wandb

        start = time.perf_counter()
        wandb.teardown()  # waits for W&B's service to write out every run handed to it
        print(f"W&B service's writing left at the end: {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
