"""Sliding-window attention kernels at the trainer's shape: forward + backward milliseconds per call.

The gpt2-scale profile (docs/BENCHMARKS.md) puts FlexAttention over a 1024-token window at about
1.8x cuDNN's time per query-key pair. This times cuDNN's full causal attention (the reference
point), FlexAttention with its default kernels and with other `kernel_options`, PyTorch's own
FlashAttention-2 with its native window (`flash_window`), and SDPA with a dense mask, and checks
each variant's output and gradients against FlexAttention's default.

    python scripts/bench_attention.py     # needs a CUDA GPU (FlexAttention has no CPU backward)
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

aten = torch.ops.aten

# Candidate kernel options; block sizes must divide the block mask's 128.
FLEX_OPTIONS: dict[str, dict] = {
    "flex bwd 64x128 / 128x64, 8 warps": dict(
        BLOCK_M1=64, BLOCK_N1=128, BLOCK_M2=128, BLOCK_N2=64, num_warps=8
    ),
    "flex bwd 32x128 / 128x32": dict(BLOCK_M1=32, BLOCK_N1=128, BLOCK_M2=128, BLOCK_N2=32),
    "flex bwd 64x64, 2 stages": dict(BLOCK_M1=64, BLOCK_N1=64, BLOCK_M2=64, BLOCK_N2=64, num_stages=2),
    "flex fwd 128x64, 8 warps": dict(BLOCK_M=128, BLOCK_N=64, num_warps=8),
    "flex fwd 128x128, 8 warps, 2 stages": dict(BLOCK_M=128, BLOCK_N=128, num_warps=8, num_stages=2),
    # Hopper's bulk tensor copies for the loads, forward and backward (off by default on CUDA in
    # PyTorch 2.13; a PyTorch without the option refuses it, and the row says so)
    "flex with TMA loads": dict(USE_TMA=True),
}


def _kernel_layout(t: torch.Tensor) -> torch.Tensor:
    """(N, L, H, D) <-> (N, H, L, D): the kernels take heads first, the model keeps tokens first."""
    return t.transpose(1, 2)


def flash_window(q, k, v, window: int) -> torch.Tensor:
    """PyTorch's own FlashAttention-2 with its native sliding window, on (B, T, H, D) tensors: one
    kernel, no merge. Its autograd formula passes the window to the backward kernel too."""
    T = q.size(1)
    out, *_ = aten._flash_attention_forward(
        q, k, v, None, None, T, T, 0.0, True, False, window_size_left=window - 1, window_size_right=0
    )
    return out


def time_ms(fn: Callable[[], None], repeat: int) -> float:
    """Median of `repeat` calls timed with CUDA events, after three warm-ups."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10, help="timed calls per kernel (their median)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_attention.py needs a CUDA GPU")
    device, dtype = torch.device("cuda"), torch.bfloat16
    batch, heads, seq, dim = 128, 4, 2048, 128  # the gpt2 scale's micro-batch
    window = seq // 2
    torch.manual_seed(0)
    q, k, v = (  # tokens first, as the model's projections give them
        torch.randn(batch, seq, heads, dim, device=device, dtype=dtype, requires_grad=True) for _ in "qkv"
    )
    grad_out = torch.randn(batch, seq, heads, dim, device=device, dtype=dtype)
    mask = create_block_mask(
        lambda b, h, qi, kv: (qi >= kv) & (qi - kv < window), None, None, seq, seq, device=device
    )

    def run(attend: Callable) -> tuple[torch.Tensor, ...]:
        q.grad = k.grad = v.grad = None
        out = attend(q, k, v)
        out.backward(grad_out)
        return out.detach(), q.grad, k.grad, v.grad

    def heads_first(attend: Callable) -> Callable:
        return lambda q, k, v: _kernel_layout(attend(*(_kernel_layout(t) for t in (q, k, v))))

    full_causal = f"SDPA full causal ({seq})"
    variants: dict[str, Callable] = {
        full_causal: heads_first(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)),
        f"flex window {window}, default": heads_first(
            torch.compile(lambda q, k, v: flex_attention(q, k, v, block_mask=mask))
        ),
    }
    for name, options in FLEX_OPTIONS.items():
        variants[name] = heads_first(
            torch.compile(
                lambda q, k, v, o=options: flex_attention(q, k, v, block_mask=mask, kernel_options=o)
            )
        )
    variants["FlashAttention-2 window (PyTorch's own)"] = lambda q, k, v: flash_window(q, k, v, window)
    i = torch.arange(seq, device=device)
    band = (i[:, None] >= i[None, :]) & (i[:, None] - i[None, :] < window)
    variants["SDPA with a dense band mask"] = heads_first(
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=band)
    )
    # Last, as never yet run: a kernel that faults the device would fail every row after it.
    variants["flex with TMA loads"] = variants.pop("flex with TMA loads")

    # Query-key pairs each variant attends: the full causal triangle or the window's band.
    full_pairs = seq * (seq + 1) / 2
    window_pairs = sum(min(i + 1, window) for i in range(seq))
    reference = None
    print(
        f"{torch.cuda.get_device_name()} bf16 | batch {batch} x {heads} heads x {seq} tokens x {dim} | window {window}"
    )
    print(f"{'variant':<42}{'fwd+bwd ms':>11}{'ns / pair-head':>16}{'max rel err':>13}")
    for name, attend in variants.items():
        try:
            result = run(attend)
            ms = time_ms(lambda a=attend: run(a), args.repeat)
        except Exception as err:  # an option a kernel refuses: report it, go on
            print(f"{name:<42}  failed: {type(err).__name__}: {(str(err).splitlines() or [''])[0][:80]}")
            continue
        pairs = (full_pairs if name == full_causal else window_pairs) * batch * heads
        error = ""
        if name != full_causal and reference is None:
            reference = result  # FlexAttention's default: the window every other variant must match
        elif name != full_causal:
            worst = max(((a - b).norm() / b.norm()).item() for a, b in zip(result, reference, strict=True))
            error = f"{worst:.1e}"
        print(f"{name:<42}{ms:>11.2f}{1e6 * ms / pairs:>16.3f}{error:>13}")


if __name__ == "__main__":
    main()
