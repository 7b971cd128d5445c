"""ESM2 (Lin et al. 2023), the architecture: a compact re-implementation of fair-esm's ESM2 for inference.

Same arithmetic as fair-esm's ESM2 (pre-LayerNorm transformer, rotary
positions, exact-erf GELU, token-dropout scaling, final LayerNorm), written for
speed at inference: one fused q/k/v projection, `scaled_dot_product_attention`
instead of explicit softmax(QK^T)V, no averaged attention weights. The LM head
(`logits`, for `glmkit jacobian`) is set by the loaders (weights.py) when the
checkpoint has one; tokens.py holds the alphabet. tests/test_esm2.py checks it
against fair-esm's own model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from glmkit.errors import GlmkitError
from glmkit.models.esm2.tokens import ALPHABET, MASK, PAD
from glmkit.models.layers import Linear, apply_rope, rope_tables

@dataclass
class ESM2Config:
    num_layers: int = 33
    embed_dim: int = 1280
    attention_heads: int = 20
    token_dropout: bool = True
    layer_norm_eps: float = 1e-5
    vocab_size: int = len(ALPHABET)


class Layer(nn.Module):
    def __init__(self, cfg: ESM2Config):
        super().__init__()
        d = cfg.embed_dim
        self.heads = cfg.attention_heads
        self.attn_norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.qkv = Linear(d, 3 * d)            # q, k, v fused: one GEMM instead of three
        self.out = Linear(d, d)
        self.ffn_norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.fc1 = Linear(d, 4 * d)
        self.fc2 = Linear(4 * d, d)

    def forward(self, x, cos, sin, keep):
        # x: (B, T, D); cos, sin: (T, hd / 2); keep: (B, 1, 1, T) bool, True for real tokens (or None)
        B, T, D = x.shape
        q, k, v = self.qkv(self.attn_norm(x)).view(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)   # (B, H, T, hd): rotate-half, as fair-esm
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)  # (B, H, T, hd)
        x = x + self.out(y.transpose(1, 2).reshape(B, T, D))
        return x + self.fc2(F.gelu(self.fc1(self.ffn_norm(x))))  # exact (erf) GELU, as ESM


class LMHead(nn.Module):
    """fair-esm's RobertaLMHead: dense, GELU, LayerNorm, then the token embedding matrix (tied) plus a bias."""

    def __init__(self, cfg: ESM2Config):
        super().__init__()
        self.dense = Linear(cfg.embed_dim, cfg.embed_dim)
        self.layer_norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        return F.linear(self.layer_norm(F.gelu(self.dense(x))), embedding) + self.bias   # (B, T, vocab)


class ESM2(nn.Module):
    def __init__(self, cfg: ESM2Config):
        super().__init__()
        self.cfg = cfg
        self.lm_head: LMHead | None = None  # set by the loaders when the checkpoint has one
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.embed_dim, padding_idx=PAD)
        self.layers = nn.ModuleList(Layer(cfg) for _ in range(cfg.num_layers))
        self.final_norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.layer_norm_eps)

    def forward(self, tokens: torch.Tensor, layer: int | None = None, padded: bool | None = None) -> torch.Tensor:
        """Hidden states after ``layer`` (default: the last, after the final LayerNorm): (B, T) -> (B, T, D).

        padded: whether any row is padded, if the caller knows (from the lengths on the host): else it is read from
        ``tokens``, which makes the host wait for the device once a batch. Without padding no mask is used, as
        fair-esm does (and a GPU may then take its fastest attention kernel)."""
        layer = self.cfg.num_layers if layer is None else layer
        pad = tokens.eq(PAD)                                           # (B, T)
        x = self.embed_tokens(tokens)                                  # (B, T, D)
        if self.cfg.token_dropout:  # ESM's training-time masking rescale; no <mask> at inference
            x = x.masked_fill((tokens == MASK).unsqueeze(-1), 0.0)
            observed = (tokens == MASK).sum(-1).to(x.dtype) / (~pad).sum(-1)
            x = x * (1 - 0.15 * 0.8) / (1 - observed)[:, None, None]
        x = x * (~pad).unsqueeze(-1).to(x.dtype)
        cos, sin = rope_tables(torch.arange(tokens.shape[1], device=tokens.device),
                               self.cfg.embed_dim // self.cfg.attention_heads)   # (T, hd / 2), base 10,000
        padded = bool(pad.any()) if padded is None else padded
        keep = (~pad)[:, None, None, :] if padded else None
        for block in self.layers[:layer]:
            x = block(x, cos, sin, keep)
        return self.final_norm(x) if layer == self.cfg.num_layers else x

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (B, T, vocab): the masked-language-model head over the last layer."""
        if self.lm_head is None:
            raise GlmkitError("this ESM2 checkpoint has no language-model head (an embeddings-only model?)")
        return self.lm_head(self.forward(tokens), self.embed_tokens.weight)
