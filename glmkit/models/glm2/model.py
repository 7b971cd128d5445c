"""gLM2 (Cornman et al. 2024, the OMG paper): a mixed-modality masked language model over a contig's tokens.

A contig is one token sequence: `<cls>`, then per element its strand token
(`<+>`/`<->`) and its residues (amino acids for a CDS, lower-case nucleotides
for intergenic DNA; glmkit/models/glm2/tokens.py). Pre-norm transformer
blocks: RMSNorm (float32 inside), attention with fused q/k/v (no bias) and
rotary positions (rotate-half over the whole head dimension, base 10,000),
SwiGLU feed-forward; no norm after the last block; the LM head has its own
RMSNorm and an untied projection. Several chunks may share a row (packing):
each token attends only within its chunk, and positions restart at every
chunk, so a packed row computes what separate rows would.

Parameter names follow glmkit; glmkit/models/glm2/weights.py maps the
published checkpoints' names (`glm2.…`, `lm_head.…`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from glmkit.models.layers import Linear, RMSNorm, SwiGLU, apply_rope, rope_tables


@dataclass
class GLM2Config:
    dim: int = 640
    depth: int = 30
    heads: int = 10
    vocab_size: int = 37
    swiglu_multiple_of: int = 256
    norm_eps: float = 1e-5
    rope_base: float = 10_000.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values, where) -> "GLM2Config":
        """The config recorded in a checkpoint's config.json; one line naming the file if it is not one."""
        from dataclasses import fields

        from glmkit.errors import GlmkitError

        known = {f.name for f in fields(cls)}
        if not isinstance(values, dict) or set(values) - known:
            extra = sorted(set(values) - known) if isinstance(values, dict) else []
            raise GlmkitError(f"{where}: not a gLM2 configuration" + (f" (unknown key {extra[0]})" if extra else ""))
        for key, value in values.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise GlmkitError(f"{where}: gLM2 configuration {key} = {value!r} is not a valid number")
        cfg = cls(**values)
        if cfg.dim % cfg.heads or (cfg.dim // cfg.heads) % 2:
            raise GlmkitError(f"{where}: gLM2 configuration dim {cfg.dim} is not an even multiple of heads "
                              f"{cfg.heads}")
        return cfg


PRESETS = {
    "650M": GLM2Config(dim=1280, depth=33, heads=20),
    "150M": GLM2Config(),
    "small": GLM2Config(dim=256, depth=6, heads=8),
    "tiny": GLM2Config(dim=32, depth=2, heads=4, swiglu_multiple_of=16),
}


def glm2_preset(name: str, **overrides) -> GLM2Config:
    return replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})


class Attention(nn.Module):
    def __init__(self, cfg: GLM2Config):
        super().__init__()
        self.heads, self.head_dim = cfg.heads, cfg.dim // cfg.heads
        self.wqkv = Linear(cfg.dim, 3 * cfg.dim, bias=False)
        self.wo = Linear(cfg.dim, cfg.dim, bias=False)

    def forward(self, x, cos, sin, allowed):
        # x (B, L, D); cos, sin (B, L, hd/2); allowed (B, 1, L, L) bool
        B, L, D = x.shape
        q, k, v = self.wqkv(x).view(B, L, 3, self.heads, self.head_dim).unbind(2)   # each (B, L, nh, hd)
        q, k = apply_rope(q, cos[:, :, None], sin[:, :, None]), apply_rope(k, cos[:, :, None], sin[:, :, None])
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                           attn_mask=allowed)                      # (B, nh, L, hd)
        return self.wo(y.transpose(1, 2).reshape(B, L, D))


class Block(nn.Module):
    def __init__(self, cfg: GLM2Config):
        super().__init__()
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attention = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.feed_forward = SwiGLU(cfg.dim, cfg.swiglu_multiple_of)

    def forward(self, x, cos, sin, allowed):
        x = x + self.attention(self.attention_norm(x), cos, sin, allowed)
        return x + self.feed_forward(self.ffn_norm(x))


class GLM2(nn.Module):
    def __init__(self, cfg: GLM2Config):
        super().__init__()
        self.cfg = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.head_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.head = Linear(cfg.dim, cfg.vocab_size, bias=False)
        for module in self.modules():  # BERT-style initialisation, as the published model's
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)

    def encode(self, tokens, segments, layers=None):
        """Hidden states after ``layers`` blocks (default all). tokens (B, L) int; segments (B, L) int: 0 for
        padding, else the chunk's number within its row. Returns (B, L, D)."""
        real = segments > 0
        allowed = (segments[:, :, None] == segments[:, None, :]) & real[:, None, :]
        allowed = allowed | torch.eye(segments.shape[1], dtype=torch.bool, device=segments.device)  # padding rows
        positions = chunk_positions(segments)                                             # (B, L)
        cos, sin = rope_tables(positions, self.cfg.dim // self.cfg.heads, self.cfg.rope_base)
        x = self.tok_embeddings(tokens)
        for block in self.layers[:layers]:
            x = block(x, cos, sin, allowed[:, None])
        return x

    def forward(self, tokens, segments, only=None):
        """Logits (B, L, vocab) and hidden states (B, L, D); with ``only``, the logits of those positions alone
        (N, vocab), the loss needing the masked tokens' only: a (B, L) bool mask, or its flat positions (N,) int64
        (no host sync: the host knows them)."""
        hidden = self.encode(tokens, segments)                                # (B, L, D)
        x = hidden if only is None else \
            hidden.flatten(0, 1).index_select(0, only) if only.dtype == torch.int64 else hidden[only]   # (N, D)
        return self.head(self.head_norm(x)), hidden


def chunk_positions(segments: torch.Tensor) -> torch.Tensor:
    """Each token's position within its chunk (0 at the chunk's first token): rows hold chunks side by side."""
    L = segments.shape[1]
    index = torch.arange(L, device=segments.device).expand_as(segments)
    new_chunk = torch.ones_like(segments, dtype=torch.bool)
    new_chunk[:, 1:] = segments[:, 1:] != segments[:, :-1]
    start = torch.where(new_chunk, index, torch.zeros_like(index)).cummax(1).values
    return index - start
