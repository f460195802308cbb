"""Throughput of the trainer: tokens/s, MFU and peak memory of one real train.py run.

It runs trainer/train.py exactly as an experiment would (same harness, same summary) for a short
budget and reads the result JSON, so the figures are those the search engine will see.

    python scripts/bench_trainer.py --scale cpu --seconds 20 --threads 1
    python scripts/bench_trainer.py --scale gpt2 --seconds 60
    python scripts/bench_trainer.py --scale gpt2 --seconds 60 --train-py my_edit.py --log run.log
    python scripts/bench_trainer.py --scale gpt2 --loader   # the dataloader alone, no model
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAINER_DIR = Path(__file__).resolve().parents[1] / "trainer"
OVERHEAD_S = 600.0  # what a run may take beyond its budget (start-up, compilation, evaluation)


def bench(
    scale: str,
    seconds: float,
    threads: int | None,
    train_py: Path,
    log: Path | None,
    seed: int | None = None,
) -> dict:
    """One run of a train.py with the given budget (and seed: the harness's default if None);
    returns its result JSON plus wall time. Its output is appended to `log` as it comes, so a run
    cut short (a hang is ended after OVERHEAD_S past the budget) still leaves what it printed.

    The harness is always trainer/prepare.py: the run happens in a fresh folder holding a copy of
    each, as an experiment's workspace does, so a prepare.py beside an edited copy is never used.
    """
    with tempfile.TemporaryDirectory() as tmp:
        result_path = Path(tmp) / "result.json"
        shutil.copyfile(train_py, Path(tmp) / "train.py")
        shutil.copyfile(TRAINER_DIR / "prepare.py", Path(tmp) / "prepare.py")
        env = dict(os.environ)
        env.update(
            AUTORESEARCH_SCALE=scale,
            AUTORESEARCH_TIME_BUDGET=str(seconds),
            AUTORESEARCH_RESULT=str(result_path),
        )
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        if seed is not None:
            env["AUTORESEARCH_SEED"] = str(seed)
        output = log or Path(tmp) / "train.log"
        started = time.time()
        with open(output, "a") as out:
            out.write(f"== {train_py} ({scale} scale, {seconds:g} s)\n")
            out.flush()
            this_run = out.tell()  # where this run's output begins in a log others share
            try:
                cmd = [sys.executable, "train.py"]
                proc = subprocess.run(
                    cmd, cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=seconds + OVERHEAD_S
                )
            except subprocess.TimeoutExpired:
                sys.exit(f"train.py did not end within {seconds + OVERHEAD_S:.0f} s (its output: {output})")
        if proc.returncode != 0:
            with open(output, "rb") as f:
                f.seek(max(this_run, f.seek(0, os.SEEK_END) - 3000))
                tail = f.read().decode(errors="replace")
            sys.exit(f"train.py failed ({proc.returncode}):\n{tail}")
        result = json.loads(result_path.read_text())
    result["wall_seconds"] = time.time() - started
    return result


def bench_loader(scale: str, seconds: float) -> None:
    """Tokens/s the harness's dataloader delivers with no model: the ceiling it puts on training."""
    os.environ["AUTORESEARCH_SCALE"] = scale
    sys.path.insert(0, str(TRAINER_DIR))
    import prepare
    import torch
    import train  # for the batch size the trainer asks for

    device = "cuda" if torch.cuda.is_available() else "cpu"
    started = time.time()
    loader = prepare.make_dataloader("train", train.DEVICE_BATCH_SIZE, device)
    next(loader)
    print(f"{'first batch:':<18}{time.time() - started:.1f} s (corpus and tokenizer included)")
    tokens, started = 0, time.time()
    while time.time() - started < seconds:
        x, _ = next(loader)
        tokens += x.numel()
    print(
        f"{'loader tokens/s:':<18}{tokens / (time.time() - started):,.0f} ({prepare.LOADER_WORKERS} worker processes)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scale", choices=("cpu", "gpt2"), default="cpu", help="harness scale (default: cpu)"
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="training budget of the run")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the run")
    parser.add_argument("--train-py", type=Path, default=TRAINER_DIR / "train.py", help="the train.py to run")
    parser.add_argument(
        "--log", type=Path, default=None, help="append the run's full output here, as it runs"
    )
    parser.add_argument("--loader", action="store_true", help="time the dataloader alone for --seconds")
    args = parser.parse_args()
    if args.loader:
        bench_loader(args.scale, args.seconds)
        return
    r = bench(args.scale, args.seconds, args.threads, args.train_py, args.log)
    # Timed steps only. A train.py that does not report it gets its warm-up tokens over timed
    # seconds: an overstatement.
    tokens_per_s = r.get("tokens_per_second") or r["total_tokens_M"] * 1e6 / r["training_seconds"]
    on_cpu = r["device"].startswith("cpu")
    mfu = f"{r['mfu_percent']:.2f} %" if r["peak_flops"] else "n/a (no known peak for this device)"
    rows = [
        ("device", r["device"]),
        ("scale / data", f"{r['scale']} / {r['data']}"),
        ("threads", str(args.threads or "default")),
        ("params", f"{r['num_params_M']:.2f} M"),
        ("steps", str(r["num_steps"])),
        ("training seconds", f"{r['training_seconds']:.1f}"),
        ("harness's count", _harness_count(r)),
        ("not counted", _harness_uncounted(r)),
        ("wall seconds", f"{r['wall_seconds']:.1f} (start-up, evaluation included)"),
        ("tokens/s", f"{tokens_per_s:,.0f}"),
        ("MFU", mfu),
        (
            "peak memory",
            f"{r['peak_vram_mb']:,.0f} MiB ({'process RSS' if on_cpu else 'GPU, max allocated'})",
        ),
        ("val_bpb", f"{r['val_bpb']:.4f}"),
    ]
    for name, value in rows:
        print(f"{name + ':':<18}{value}")


def _harness_count(r: dict) -> str:
    """The harness's own count of the training time (prepare.training_count), which a run must keep
    within its budget: on a GPU, the check that it agrees with train.py's count."""
    counted = r.get("harness_train_seconds")
    return (
        "n/a (an older harness)"
        if counted is None
        else f"{counted:.1f} s (held to the budget + 10% + 12 steps, those at most half the budget)"
    )


def _harness_uncounted(r: dict) -> str:
    """The time from the first batch to the evaluation that the count left out (stalls such as the
    compilation, the work after the last batch): on a GPU, the check that an honest run is far
    from the limit."""
    uncounted = r.get("harness_uncounted_seconds")
    return (
        "n/a (an older harness)"
        if uncounted is None
        else f"{uncounted:.1f} s (at most half the budget, on a GPU at least 90 s)"
    )


if __name__ == "__main__":
    main()
