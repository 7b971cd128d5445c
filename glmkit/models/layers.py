"""Layers shared by glmkit's models."""

from __future__ import annotations

import functools

import torch
from torch import nn


@functools.cache
def onednn_fp32_gemms() -> bool:
    """Whether float32 linear layers on CPU run their GEMMs through oneDNN instead of torch's default BLAS (MKL).

    MKL takes its AVX2 code path on AMD CPUs; oneDNN picks its kernels by instruction set alone, so on AMD CPUs
    with AVX-512 it multiplies fp32 matrices ~1.2-1.5x faster at the models' shapes (bench/tricks.py
    onednn-linear). With AVX2 only, or on Intel CPUs (where MKL runs its AVX-512 path), MKL stays.
    """
    op = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
    if op is None or not torch.backends.mkldnn.is_available():
        return False
    if torch.backends.cpu.get_cpu_capability() not in ("AVX512", "AVX512_BF16", "AMX"):
        return False
    try:
        with open("/proc/cpuinfo") as f:
            vendor = next((line.split(":")[1].strip() for line in f if line.startswith("vendor_id")), "")
    except OSError:
        return False
    return vendor == "AuthenticAMD"


def _gemm(a: torch.Tensor, b_t: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """a @ b_t.T (+ bias) by oneDNN: a (M, K), b_t (N, K), either may be a transposed view."""
    return torch.ops.mkldnn._linear_pointwise(a, b_t, bias, "none", [], "")


class _OneDNNLinear(torch.autograd.Function):
    """F.linear on 2-d float32 CPU input with all three GEMMs (forward, input and weight gradients) by oneDNN."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _gemm(x, weight, bias)                                  # (M, out)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()                                       # (M, out)
        gx = _gemm(grad, weight.t()) if ctx.needs_input_grad[0] else None       # (M, in)
        gw = _gemm(grad.t(), x.t()) if ctx.needs_input_grad[1] else None        # (out, in)
        gb = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None  # (out,)
        return gx, gw, gb


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear; float32 on CPU through oneDNN where that is faster (onednn_fp32_gemms). Autocast (bf16 already
    runs on oneDNN), other devices and dtypes, and torch.compile's tracing take F.linear."""
    if (x.device.type != "cpu" or x.dtype != torch.float32 or weight.dtype != torch.float32
            or x.numel() == 0 or weight.numel() == 0  # oneDNN refuses empty products (e.g. no masked genes)
            or torch.is_autocast_enabled("cpu") or torch.compiler.is_compiling() or not onednn_fp32_gemms()):
        return nn.functional.linear(x, weight, bias)
    flat = x.reshape(-1, x.shape[-1]).contiguous()                     # (M, in)
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                    or (bias is not None and bias.requires_grad)):
        y = _OneDNNLinear.apply(flat, weight, bias)
    else:
        y = _gemm(flat, weight, bias)
    return y.view(*x.shape[:-1], weight.shape[0])


class Linear(nn.Linear):
    """nn.Linear (same parameters and names) computed by ``linear``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


class Dropout(nn.Module):
    """nn.Dropout's arithmetic (zero with probability p, scale the rest by 1 / (1 - p)) with the mask drawn as
    16-bit random integers compared with round(p x 2^16), four from each 64-bit draw of the generator: on CPU,
    torch's bernoulli_ behind F.dropout (one double per element) took ~4x as long, and one 24-bit integer per
    element (this layer before) ~2x (bench/tricks.py dropout). The same distribution to 8e-6 in p, from the same
    generator (saved with checkpoints)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if x.device.type != "cpu" or torch.compiler.is_compiling():
            # torch.compile: its own fused random numbers (the bit trick below is an in-place random_, which
            # would break the compiled graph at every dropout)
            return nn.functional.dropout(x, self.p, True)
        n = x.numel()
        bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(1 << 63), None)  # 64 uniform bits each
        words = bits.view(torch.int16)[:n].view(x.shape)                               # uniform on [-2^15, 2^15)
        keep = words >= round(self.p * (1 << 16)) - (1 << 15)
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
        self.w1 = Linear(dim, hidden, bias=False)
        self.w2 = Linear(hidden, dim, bias=False)
        self.w3 = Linear(dim, hidden, bias=False)

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
