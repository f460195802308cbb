"""Throughput of the trainer: tokens/s, MFU and peak memory of one real train.py run.

It runs trainer/train.py exactly as an experiment would (same harness, same summary) for a short
budget and reads the result JSON, so the figures are those the search engine will see.

    python scripts/bench_trainer.py --scale cpu --seconds 20 --threads 1
    python scripts/bench_trainer.py --scale gpt2 --seconds 60
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAIN_PY = Path(__file__).resolve().parents[1] / "trainer" / "train.py"


def bench(scale: str, seconds: float, threads: int | None) -> dict:
    """One run of train.py with the given budget; returns its result JSON plus wall time."""
    with tempfile.TemporaryDirectory() as tmp:
        result_path = Path(tmp) / "result.json"
        env = dict(os.environ)
        env.update(
            AUTORESEARCH_SCALE=scale,
            AUTORESEARCH_TIME_BUDGET=str(seconds),
            AUTORESEARCH_RESULT=str(result_path),
        )
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        started = time.time()
        proc = subprocess.run(
            [sys.executable, str(TRAIN_PY)], cwd=tmp, env=env, capture_output=True, text=True
        )
        if proc.returncode != 0:
            sys.exit(f"train.py failed ({proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
        result = json.loads(result_path.read_text())
    result["wall_seconds"] = time.time() - started
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=("cpu", "gpt2"), default="cpu")
    parser.add_argument("--seconds", type=float, default=20.0, help="training budget of the run")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the run")
    args = parser.parse_args()
    r = bench(args.scale, args.seconds, args.threads)
    tokens_per_s = r["total_tokens_M"] * 1e6 / r["training_seconds"]
    on_cpu = r["device"].startswith("cpu")
    mfu = f"{r['mfu_percent']:.2f} %" if r["peak_flops"] else "n/a (no known peak for this device)"
    rows = [
        ("device", r["device"]),
        ("scale / data", f"{r['scale']} / {r['data']}"),
        ("threads", str(args.threads or "default")),
        ("params", f"{r['num_params_M']:.2f} M"),
        ("steps", str(r["num_steps"])),
        ("training seconds", f"{r['training_seconds']:.1f}"),
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


if __name__ == "__main__":
    main()
