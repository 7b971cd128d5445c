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


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight, computed in float32 whatever the input's dtype (as gLM2 does)."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        return (self.weight.float() * x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)


class SwiGLU(nn.Module):
    """w2(silu(w1 x) * w3 x), no biases; hidden = 2/3 of 4 x dim, rounded up to a multiple of ``multiple_of``."""

    def __init__(self, dim: int, multiple_of: int = 256):
        super().__init__()
        hidden = swiglu_hidden(dim, multiple_of)
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(nn.functional.silu(self.w1(x)) * self.w3(x))


def swiglu_hidden(dim: int, multiple_of: int) -> int:
    hidden = int(2 * 4 * dim / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


def rope_tables(positions: torch.Tensor, head_dim: int, base: float = 10_000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (*positions.shape, head_dim / 2) of rotary embeddings at integer ``positions`` (float32)."""
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=positions.device) / head_dim)
    angles = positions.float()[..., None] * inv_freq
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE over the whole head dimension: x (..., head_dim), cos/sin broadcastable to (..., head_dim/2).
    Pairs are (i, i + head_dim/2), not interleaved neighbours."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)
