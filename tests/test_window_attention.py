"""scripts/bench_attention.py's window from causal kernels: exact against a dense sliding-window mask.

The GPU variants (cuDNN, flash) share this code and differ only in the kernel called; on CPU the
same merge and backward run on PyTorch's CPU flash kernel.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from engine_helpers import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("bench_attention")


@pytest.mark.parametrize("batch, seq, heads, dim, window", [(2, 16, 3, 8, 8), (1, 64, 2, 16, 16)])
def test_window_from_causal_calls_matches_a_dense_mask(bench, batch, seq, heads, dim, window) -> None:
    torch.manual_seed(0)
    q, k, v = (torch.randn(batch, seq, heads, dim, requires_grad=True) for _ in "qkv")
    i = torch.arange(seq)
    band = (i[:, None] >= i[None, :]) & (i[:, None] - i[None, :] < window)
    heads_first = [t.transpose(1, 2) for t in (q, k, v)]
    expected = F.scaled_dot_product_attention(*heads_first, attn_mask=band).transpose(1, 2)
    grad = torch.randn_like(expected)
    expected_grads = torch.autograd.grad(expected, (q, k, v), grad)

    out = bench.window_attention(q, k, v, window, "cpu")
    grads = torch.autograd.grad(out, (q, k, v), grad)

    assert (out - expected).abs().max() < 1e-5
    for got, want in zip(grads, expected_grads, strict=True):
        assert (got - want).abs().max() < 1e-5


def test_flash_window_call_fits_this_pytorch(bench) -> None:
    """PyTorch's FlashAttention-2 runs on CUDA only; on the meta device this checks what can be
    checked here: the schema takes the window, the shapes, and a backward that reaches q, k, v."""
    q, k, v = (
        torch.randn(2, 2048, 4, 128, device="meta", dtype=torch.bfloat16, requires_grad=True) for _ in "qkv"
    )
    out = bench.flash_window(q, k, v, 1024)
    assert out.shape == q.shape and type(out.grad_fn).__name__ == "FlashAttentionBackward0"
    out.backward(torch.empty_like(out))
    assert all(t.grad is not None and t.grad.shape == q.shape for t in (q, k, v))
