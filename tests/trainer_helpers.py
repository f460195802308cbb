"""Shared pieces of the trainer tests: where the trainer lives, a model with fixed logits, and
small real GPTs of train.py."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import torch

TRAINER_DIR = Path(__file__).resolve().parents[1] / "trainer"


class ConstantLogits(torch.nn.Module):
    """Returns the same logits everywhere: uniform unless some ids are pushed down."""

    def __init__(self, vocab: int, low_ids: list[int] | None = None) -> None:
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(vocab))
        with torch.no_grad():
            self.bias[low_ids or []] = -1e9

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(*idx.shape, -1)


def gpt_config(train_mod: ModuleType, **overrides: Any) -> Any:
    """A small train.py GPTConfig for the CPU, fp32 and dense attention."""
    settings = dict(
        vocab_size=2048,
        seq_len=64,
        n_layer=4,
        n_embd=64,
        head_dim=16,
        window_pattern="SSSL",
        short_window=16,
        use_flex=False,
        stream_dtype=torch.float32,
    )
    return train_mod.GPTConfig(**(settings | overrides))


def random_gpt(train_mod: ModuleType, std: float = 0.2, **overrides: Any) -> torch.nn.Module:
    """A train.py GPT with random weights, past the zero-initialised projections, so every path
    matters."""
    torch.manual_seed(0)
    model = train_mod.GPT(gpt_config(train_mod, **overrides))
    for p in model.parameters():
        torch.nn.init.normal_(p, std=std)
    return model
