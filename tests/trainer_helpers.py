"""Shared pieces of the trainer tests: where the trainer lives, and a model with fixed logits."""

from __future__ import annotations

from pathlib import Path

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
