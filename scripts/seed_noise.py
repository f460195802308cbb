"""Seed noise of the trainer, and how much of it nearby versions share.

Runs train.py and knob variants of it over a range of seeds, each run exactly as an experiment
(`bench_trainer.bench`), and prints val_bpb per seed, then per variant its difference from
train.py seed for seed. When the spread of those differences is well below what two independent
runs would show, the versions draw much of a seed's luck alike, and comparing them on the same
seeds (as the keep rule's confirmation does) cancels it:

    python scripts/seed_noise.py --seeds 42-47 --variant UNEMBEDDING_LR=0.008 --variant ASPECT_RATIO=32
"""

from __future__ import annotations

import argparse
import ast
import math
import statistics
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench_trainer import TRAINER_DIR, bench

sys.path.insert(0, str(TRAINER_DIR.parent))  # the project's package, installed or not (a GPU machine)

from autoresearch.knobs import set_knobs  # noqa: E402


def variant(text: str) -> tuple[str, dict[str, object]]:
    """`NAME=VALUE[,NAME=VALUE]`: a label and the knobs it sets."""
    knobs = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        knobs[name.strip()] = ast.literal_eval(value.strip())
    return text, knobs


def seed_range(text: str) -> list[int]:
    first, _, last = text.partition("-")
    return list(range(int(first), int(last or first) + 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scale", choices=("cpu", "gpt2"), default="cpu", help="harness scale (default: cpu)"
    )
    parser.add_argument("--seconds", type=float, default=15.0, help="training budget of each run")
    parser.add_argument("--seeds", type=seed_range, default=seed_range("42-47"), help="e.g. 42-47")
    parser.add_argument("--variant", type=variant, action="append", default=[], help="e.g. MATRIX_LR=0.08")
    parser.add_argument(
        "--jobs", type=int, default=None, help="runs at once (default 2; 1 at the gpt2 scale)"
    )
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each run")
    args = parser.parse_args()
    if args.scale == "gpt2" and (args.jobs or 1) > 1:  # runs sharing one GPU would each train less
        parser.error("--scale gpt2 runs one at a time on the GPU: --jobs 1")
    jobs = args.jobs or (1 if args.scale == "gpt2" else 2)
    source = (TRAINER_DIR / "train.py").read_text()
    with tempfile.TemporaryDirectory() as tmp:
        files = {"train.py": TRAINER_DIR / "train.py"}
        for i, (label, knobs) in enumerate(args.variant):
            files[label] = Path(tmp) / f"variant{i}.py"
            files[label].write_text(set_knobs(source, knobs))
        # A seed's versions one after the other: a busier machine (fewer steps in a CPU budget)
        # then weighs on all of them alike, not on one version's runs.
        runs = [(label, seed) for seed in args.seeds for label in files]

        def one(run: tuple[str, int]) -> tuple[float, int]:
            label, seed = run
            result = bench(args.scale, args.seconds, args.threads, files[label], None, seed)
            print(f"  {label} seed {seed}: {result['val_bpb']:.4f}", file=sys.stderr, flush=True)
            return result["val_bpb"], result["num_steps"]

        with ThreadPoolExecutor(jobs) as pool:
            results = dict(zip(runs, pool.map(one, runs), strict=True))
    print("\n".join(report(results, list(files), args.seeds)))


def _spread(values: list[float]) -> float:
    """Standard deviation; nan for a single seed, which has none."""
    return statistics.stdev(values) if len(values) > 1 else math.nan


def report(
    results: dict[tuple[str, int], tuple[float, int]], labels: list[str], seeds: list[int]
) -> list[str]:
    """The table of val_bpb per seed, then per version its spread and its differences from train.py;
    spreads and correlations are nan for a single seed."""
    values = {run: value for run, (value, _) in results.items()}
    steps = {label: [results[label, s][1] for s in seeds] for label in labels}
    width = max(12, *(len(label) + 2 for label in labels))
    lines = ["seed " + "".join(f"{label:>{width}}" for label in labels)]
    for seed in seeds:
        lines.append(f"{seed:<5}" + "".join(f"{values[label, seed]:>{width}.4f}" for label in labels))
    base = [values["train.py", s] for s in seeds]
    lines.append(
        f"\ntrain.py: mean {statistics.fmean(base):.4f}, std over seeds {_spread(base):.4f} "
        f"({min(steps['train.py'])}-{max(steps['train.py'])} steps)"
    )
    for label in labels[1:]:
        runs_of = [values[label, s] for s in seeds]
        deltas = [a - b for a, b in zip(runs_of, base, strict=True)]
        independent = math.hypot(_spread(runs_of), _spread(base))
        correlation = statistics.correlation(runs_of, base) if len(seeds) > 1 else math.nan
        lines.append(
            f"{label}: mean {statistics.fmean(runs_of):.4f}, std {_spread(runs_of):.4f} "
            f"({min(steps[label])}-{max(steps[label])} steps); "
            f"minus train.py seed for seed: mean {statistics.fmean(deltas):+.4f}, std {_spread(deltas):.4f} "
            f"(independent runs: {independent:.4f}; correlation {correlation:+.2f})"
        )
    return lines


if __name__ == "__main__":
    main()
