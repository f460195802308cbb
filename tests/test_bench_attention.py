"""scripts/bench_attention.py's call of PyTorch's FlashAttention-2 window: it still fits this PyTorch."""

from __future__ import annotations

import torch
from engine_helpers import load_script


def test_flash_window_call_fits_this_pytorch() -> None:
    """PyTorch's FlashAttention-2 runs on CUDA only; on the meta device this checks what can be
    checked here: the schema takes the window, the shapes, and a backward that reaches q, k, v."""
    q, k, v = (
        torch.randn(2, 2048, 4, 128, device="meta", dtype=torch.bfloat16, requires_grad=True) for _ in "qkv"
    )
    out = load_script("bench_attention").flash_window(q, k, v, 1024)
    assert out.shape == q.shape and type(out.grad_fn).__name__ == "FlashAttentionBackward0"
    out.backward(torch.empty_like(out))
    assert all(t.grad is not None and t.grad.shape == q.shape for t in (q, k, v))
