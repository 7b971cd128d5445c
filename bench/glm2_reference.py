"""gLM2's published forward (TattaBio's `modeling_glm2.py`, gLM2ForMaskedLM), transcribed for the benchmark.

Written here from the published code's behaviour, module by module, with its
names (so that a state dict in the published layout loads as is): padded
batches with a key-padding mask expanded to (B, heads, L, L), its own rotary
cache (positions 0..L-1 of the padded row, cos/sin in the activations'
dtype, `rotate_half` non-interleaved, applied to q and k of the fused qkv),
RMSNorm computed in float32, SwiGLU with the hidden width int(2 * 4 * dim / 3)
rounded up to `swiglu_multiple_of`, `scaled_dot_product_attention`, an LM
head of its own RMSNorm and an untied projection; the masked-LM loss is
`CrossEntropyLoss` over labels with -100 where nothing is predicted. No
einops: `repeat(cos, "... d -> ... 1 (2 d)")` is `cat([cos, cos], -1)[..., None, :]`.
"""

from __future__ import annotations

import torch
from torch import nn


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x, cos, sin):
    """x (B, L, H, hd); cos, sin (L, hd/2)."""
    cos = torch.cat([cos, cos], -1)[:, None, :]
    sin = torch.cat([sin, sin], -1)[:, None, :]
    return x * cos + rotate_half(x) * sin


class RotaryEmbedding(nn.Module):
    def __init__(self, dim, base=10000.0):
        super().__init__()
        self.register_buffer("inv_freq", 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)),
                             persistent=False)
        self._seq_len_cached, self._cos_cached, self._sin_cached = 0, None, None

    def _update(self, seqlen, device, dtype):
        if (seqlen > self._seq_len_cached or self._cos_cached is None or self._cos_cached.device != device
                or self._cos_cached.dtype != dtype or (self.training and self._cos_cached.is_inference())):
            self._seq_len_cached = seqlen
            freqs = torch.outer(torch.arange(seqlen, device=device, dtype=torch.float32), self.inv_freq)
            self._cos_cached, self._sin_cached = torch.cos(freqs).to(dtype), torch.sin(freqs).to(dtype)

    def forward(self, qkv):
        """qkv (B, L, 3, H, hd): q and k rotated, v as is."""
        seqlen = qkv.shape[1]
        if seqlen > self._seq_len_cached:
            self._update(seqlen, qkv.device, qkv.dtype)
        cos, sin = self._cos_cached[:seqlen], self._sin_cached[:seqlen]
        return torch.stack((apply_rotary(qkv[:, :, 0], cos, sin), apply_rotary(qkv[:, :, 1], cos, sin),
                            qkv[:, :, 2]), dim=2)


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.register_buffer("variance_epsilon", torch.tensor(eps), persistent=False)

    def forward(self, hidden):
        dtype = hidden.dtype
        hidden = hidden.to(torch.float32)
        hidden = hidden * torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return (self.weight * hidden).to(dtype)


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.n_heads, self.head_dim = cfg.heads, cfg.dim // cfg.heads
        self.wqkv = nn.Linear(cfg.dim, 3 * cfg.dim, bias=False)
        self.wo = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.rotary_emb = RotaryEmbedding(self.head_dim)

    def forward(self, x, attention_mask=None):
        bsz, seqlen, size = x.shape
        qkv = self.rotary_emb(self.wqkv(x).view(bsz, seqlen, 3, self.n_heads, self.head_dim))
        qkv = torch.transpose(qkv, 3, 1)                                   # (B, H, 3, L, hd)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        if attention_mask is not None:
            attention_mask = attention_mask[:, None, None, :].expand(bsz, self.n_heads, seqlen, seqlen).bool()
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask)
        return self.wo(out.permute(0, 2, 1, 3).contiguous().view(bsz, seqlen, size))


class FeedForward(nn.Module):
    def __init__(self, dim, multiple_of):
        super().__init__()
        hidden = int(2 * (4 * dim) / 3)
        hidden = multiple_of * ((hidden + multiple_of - 1) // multiple_of)
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)

    def forward(self, x):
        return self.w2(nn.functional.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.attention = Attention(cfg)
        self.feed_forward = FeedForward(cfg.dim, cfg.swiglu_multiple_of)
        self.attention_norm = RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.ffn_norm = RMSNorm(cfg.dim, eps=cfg.norm_eps)

    def forward(self, x, attention_mask=None):
        h = x + self.attention(self.attention_norm(x), attention_mask=attention_mask)
        return h + self.feed_forward(self.ffn_norm(h))


class Encoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.layers = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.depth))

    def forward(self, x, attention_mask=None):
        for layer in self.layers:
            x = layer(x, attention_mask=attention_mask)
        return x


class GLM2Model(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.encoder = Encoder(cfg)

    def forward(self, input_ids, attention_mask=None):
        return self.encoder(self.tok_embeddings(input_ids), attention_mask)


class LMHead(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.norm = RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.proj_output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)

    def forward(self, features):
        return self.proj_output(self.norm(features))


class GLM2ForMaskedLM(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.glm2 = GLM2Model(cfg)
        self.lm_head = LMHead(cfg)

    def forward(self, input_ids, attention_mask=None, labels=None):
        """(loss or None, logits (B, L, vocab))."""
        logits = self.lm_head(self.glm2(input_ids, attention_mask))
        loss = None
        if labels is not None:
            loss = nn.CrossEntropyLoss()(logits.view(-1, self.cfg.vocab_size), labels.view(-1))
        return loss, logits
