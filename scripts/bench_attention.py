"""Sliding-window attention kernels at the trainer's shape: forward + backward milliseconds per call.

The gpt2-scale profile (docs/BENCHMARKS.md) puts FlexAttention over a 1024-token window at about
1.8x cuDNN's time per query-key pair. This times cuDNN's full causal attention (the reference
point), FlexAttention with its default kernels and with other `kernel_options`, the window built
from plain causal kernels (`window_attention`: each window-sized chunk attends to itself and,
flipped, to the chunk before, the two merged by their log-sum-exp), PyTorch's own FlashAttention-2
with its native window (`flash_window`), and SDPA with a dense mask, and checks each variant's
output and gradients against FlexAttention's default.

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
}


def causal_attention(q, k, v, backend: str) -> tuple[torch.Tensor, torch.Tensor, tuple]:
    """Causal attention of (B, H, L, D) views: output, log-sum-exp (B, H, L) in fp32, and what the
    backend's backward needs besides. `backend`: "cpu", "flash" or "cudnn" (PyTorch's own kernels)."""
    if backend == "cpu":
        out, lse = aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, True)
        return out, lse, ()
    if backend == "flash":
        out, lse, *rest = aten._scaled_dot_product_flash_attention(q, k, v, 0.0, True, False)
        return out, lse, tuple(rest[:6])
    out, lse, *rest = aten._scaled_dot_product_cudnn_attention(q, k, v, None, True, 0.0, True, False)
    return out, lse.squeeze(-1), tuple(rest[:6])


def causal_attention_backward(grad, q, k, v, out, lse, aux: tuple, backend: str):
    """Gradients of q, k, v for one causal call, given the output and log-sum-exp of the whole
    attention these keys are part of (as ring attention does), so merged calls get exact gradients."""
    if backend == "cpu":
        return aten._scaled_dot_product_flash_attention_for_cpu_backward(grad, q, k, v, out, lse, 0.0, True)
    if backend == "flash":
        cum_q, cum_k, max_q, max_k, seed, offset = aux
        return aten._scaled_dot_product_flash_attention_backward(
            grad, q, k, v, out, lse, cum_q, cum_k, max_q, max_k, 0.0, True, seed, offset
        )
    cum_q, cum_k, max_q, max_k, seed, offset = aux
    return aten._scaled_dot_product_cudnn_attention_backward(
        grad,
        q,
        k,
        v,
        out,
        lse.unsqueeze(-1).contiguous(),
        seed,
        offset,
        None,
        cum_q,
        cum_k,
        max_q,
        max_k,
        0.0,
        True,
    )


def _kernel_layout(t: torch.Tensor) -> torch.Tensor:
    """(N, L, H, D) <-> (N, H, L, D): the kernels take heads first, the model keeps tokens first."""
    return t.transpose(1, 2)


def _chunks(t: torch.Tensor, W: int) -> torch.Tensor:
    """Every window-sized chunk as one batch entry: (B * n, H, W, D), a view."""
    B, T, H, D = t.shape
    return _kernel_layout(t.view(B * (T // W), W, H, D))


def _flipped(t: torch.Tensor, W: int, chunks: slice, rows: slice) -> torch.Tensor:
    """Some chunks, each flipped in token order and cut to some rows: (B * chunks, H, rows, D)."""
    B, T, H, D = t.shape
    part = t.view(B, T // W, W, H, D)[:, chunks].flip(2)[:, :, rows]
    return _kernel_layout(part.reshape(-1, *part.shape[2:]))


def _later_rows(t: torch.Tensor, W: int) -> torch.Tensor:
    """Queries: chunks 1..n-1 without their last row, which sees nothing of the chunk before."""
    return _flipped(t, W, slice(1, None), slice(1, None))


def _earlier_keys(t: torch.Tensor, W: int) -> torch.Tensor:
    """Keys and values: chunks 0..n-2 without their first row, which no later query sees."""
    return _flipped(t, W, slice(None, -1), slice(None, W - 1))


def _unflip(t: torch.Tensor, B: int, n: int, W: int) -> torch.Tensor:
    """A (B * (n - 1), H, W - 1, D) kernel result back to (B, n - 1, W - 1, H, D) in token order."""
    return _kernel_layout(t).reshape(B, n - 1, W - 1, t.size(1), t.size(-1)).flip(2)


class WindowAttention(torch.autograd.Function):
    """Causal attention within a window of W tokens over (B, T, H, D) tensors, T a multiple of W.

    Query chunk c sees its own chunk up to itself (one causal call over every chunk at once) and
    the keys of chunk c-1 after its own position: a strict upper triangle, which is a causal call
    once both chunks are flipped. The two parts merge by their log-sum-exp; the backward gives each
    call the merged output and log-sum-exp, as ring attention does, so its gradients are exact.
    """

    @staticmethod
    def forward(ctx, q, k, v, window: int, backend: str):
        B, T, H, D = q.shape
        W, n = window, T // window
        out_d, lse_d, aux_d = causal_attention(_chunks(q, W), _chunks(k, W), _chunks(v, W), backend)
        out_o, lse_o, aux_o = causal_attention(
            _later_rows(q, W), _earlier_keys(k, W), _earlier_keys(v, W), backend
        )
        # Both parts on one (B, n, H, W) grid; the flipped part covers rows 0..W-2 of chunks 1..n-1.
        lse_d = lse_d.view(B, n, H, W)
        lse_o_grid = lse_d.new_full((B, n, H, W), float("-inf"))
        lse_o_grid[:, 1:, :, : W - 1] = lse_o.view(B, n - 1, H, W - 1).flip(-1)
        out_o_grid = out_d.new_zeros((B, n, W, H, D))
        out_o_grid[:, 1:, : W - 1] = _unflip(out_o, B, n, W)
        lse = torch.logaddexp(lse_d, lse_o_grid)

        def share(part_lse: torch.Tensor) -> torch.Tensor:  # (B, n, W, H, 1) weights
            return (part_lse - lse).exp().transpose(2, 3).unsqueeze(-1)

        out_d = _kernel_layout(out_d).reshape(B, n, W, H, D)
        out = (out_d * share(lse_d) + out_o_grid * share(lse_o_grid)).to(q.dtype).reshape(B, T, H, D)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.window, ctx.backend, ctx.aux = window, backend, (aux_d, aux_o)
        return out

    @staticmethod
    def backward(ctx, grad):
        q, k, v, out, lse = ctx.saved_tensors
        B, T, H, D = q.shape
        W, backend, (aux_d, aux_o) = ctx.window, ctx.backend, ctx.aux
        n = T // W
        grad = grad.contiguous()
        diag = causal_attention_backward(
            *(_chunks(t, W) for t in (grad, q, k, v, out)), lse.reshape(B * n, H, W), aux_d, backend
        )
        dq, dk, dv = (_kernel_layout(g).reshape(B, n, W, H, D).clone() for g in diag)
        lse_rows = lse[:, 1:, :, : W - 1].flip(-1).reshape(B * (n - 1), H, W - 1).contiguous()
        gq, gk, gv = causal_attention_backward(
            _later_rows(grad, W),
            _later_rows(q, W),
            _earlier_keys(k, W),
            _earlier_keys(v, W),
            _later_rows(out, W),
            lse_rows,
            aux_o,
            backend,
        )
        dq[:, 1:, : W - 1] += _unflip(gq, B, n, W)
        dk[:, :-1, 1:] += _unflip(gk, B, n, W)
        dv[:, :-1, 1:] += _unflip(gv, B, n, W)
        return dq.view(B, T, H, D), dk.view(B, T, H, D), dv.view(B, T, H, D), None, None


def window_attention(q, k, v, window: int, backend: str) -> torch.Tensor:
    """Sliding-window causal attention of (B, T, H, D) tensors from causal kernels alone."""
    assert q.size(1) % window == 0 and q.size(1) > window, "the sequence must be 2+ whole windows"
    return WindowAttention.apply(q, k, v, window, backend)


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
    parser.add_argument("--repeat", type=int, default=10)
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
    for backend in ("cudnn", "flash"):
        variants[f"causal chunks merged, {backend} (eager)"] = lambda q, k, v, b=backend: window_attention(
            q, k, v, window, b
        )
    variants["FlashAttention-2 window (PyTorch's own)"] = lambda q, k, v: flash_window(q, k, v, window)
    i = torch.arange(seq, device=device)
    band = (i[:, None] >= i[None, :]) & (i[:, None] - i[None, :] < window)
    variants["SDPA with a dense band mask"] = heads_first(
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=band)
    )

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
            print(f"{name:<42}  failed: {type(err).__name__}: {str(err).splitlines()[0][:80]}")
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
