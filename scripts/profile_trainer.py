"""Where a training step of train.py spends its GPU time: kernels and kernel families, per step.

Builds the model and optimizers of trainer/train.py as its main() does (compiled, bf16 autocast),
runs a few warm-up steps on random tokens, then profiles `--steps` full optimizer steps. Random
tokens cost the same FLOPs as real ones, so no data is needed. Needs a CUDA GPU.

    python scripts/profile_trainer.py --steps 2 --table profile.txt
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections import defaultdict
from pathlib import Path

TRAINER_DIR = Path(__file__).resolve().parents[1] / "trainer"

# Kernel name patterns, first match wins: enough to see what a step is made of. Inductor names a
# FlexAttention kernel after the ops fused into it, so it is told apart by "flex" or "triton_tem".
FAMILIES = (  # (label in the kernel list, family name, pattern)
    ("flex", "attention (FlexAttention)", r"flex_attention|triton_tem"),
    ("sdpa", "attention (flash / cuDNN SDPA)", r"flash|fmha|sdpa"),
    ("matmul", "matmul", r"gemm|nvjet|cutlass|xmma|sm90|matmul"),
    ("inductor", "fused elementwise / reductions (inductor)", r"triton_"),
    ("optim", "optimizer (foreach / fused Adam)", r"foreach|adam|multi_tensor"),
)


def family(kernel: str) -> tuple[str, str]:
    """(short label, family name) of a kernel."""
    found = (f[:2] for f in FAMILIES if re.search(f[2], kernel, re.I))
    return next(found, ("other", "other"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2, help="optimizer steps to profile")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation)")
    parser.add_argument("--table", type=Path, default=None, help="write the full kernel table here")
    args = parser.parse_args()
    os.environ.setdefault("AUTORESEARCH_SCALE", "gpt2")
    sys.path.insert(0, str(TRAINER_DIR))
    import torch
    import train
    from torch.profiler import ProfilerActivity, profile

    if not torch.cuda.is_available():
        sys.exit("profile_trainer.py needs a CUDA GPU")
    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    with device:
        raw_model = train.GPT(train.default_config(device))
    raw_model.init_weights()
    model = torch.compile(raw_model, dynamic=False)
    optimizers = train.build_optimizers(raw_model)
    accum = train.TOTAL_BATCH_SIZE // (train.DEVICE_BATCH_SIZE * train.MAX_SEQ_LEN)
    shape = (train.DEVICE_BATCH_SIZE, train.MAX_SEQ_LEN)
    x = torch.randint(0, train.VOCAB_SIZE, shape, device=device)
    y = torch.randint(0, train.VOCAB_SIZE, shape, device=device)

    def step() -> None:
        for _ in range(accum):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = model(x, y)
            (loss / accum).backward()
        for opt in optimizers:
            opt.step()
        raw_model.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        start.record()
        for _ in range(args.steps):
            step()
        end.record()
        torch.cuda.synchronize()
    step_ms = start.elapsed_time(end) / args.steps

    kernels = [e for e in prof.key_averages() if e.device_type.name == "CUDA"]
    kernels.sort(key=lambda e: e.device_time_total, reverse=True)
    busy_ms = sum(e.device_time_total for e in kernels) / 1e3 / args.steps
    by_family: dict[str, float] = defaultdict(float)
    for e in kernels:
        by_family[family(e.key)[1]] += e.device_time_total / 1e3 / args.steps
    if args.table:
        args.table.write_text(prof.key_averages().table(sort_by="device_time_total", row_limit=200))
    flops = train.matmul_flops_per_token(raw_model) * train.TOTAL_BATCH_SIZE
    print(f"{torch.cuda.get_device_name()} | step {step_ms:.1f} ms | kernels busy {busy_ms:.1f} ms")
    print(f"model FLOPs per step {flops / 1e12:.1f} T -> {flops / step_ms / 1e9:.0f} TFLOP/s achieved")
    print("\nper step, by family:")
    for name, ms in sorted(by_family.items(), key=lambda kv: -kv[1]):
        print(f"  {ms:8.1f} ms  {100 * ms / step_ms:5.1f} %  {name}")
    print("\ntop kernels, per step:")
    for e in kernels[:25]:
        ms = e.device_time_total / 1e3 / args.steps
        print(f"  {ms:8.2f} ms  x{e.count // args.steps:<4d} {family(e.key)[0]:<9}  {e.key[:90]}")


if __name__ == "__main__":
    main()
