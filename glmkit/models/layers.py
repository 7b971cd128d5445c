"""Layers shared by glmkit's models."""

from __future__ import annotations

import torch
from torch import nn


class Dropout(nn.Module):
    """nn.Dropout's arithmetic (zero with probability p, scale the rest by 1 / (1 - p)) with the mask drawn as
    24-bit random integers compared with round(p x 2^24): on CPU, torch's bernoulli_ behind F.dropout took more
    than twice as long, about 7 % of a gLM training step (bench/tricks.py dropout). The same distribution to
    6e-8 in p, from the same generator (saved with checkpoints)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if x.device.type != "cpu":
            return nn.functional.dropout(x, self.p, True)
        keep = torch.randint(0, 1 << 24, x.shape, dtype=torch.int32) >= round(self.p * (1 << 24))
        return x * keep * (1.0 / (1.0 - self.p))
