"""gLM (Hwang et al. 2024): a RoBERTa-style encoder over the genes of a sub-contig.

Input per gene: its standardised ESM2 embedding plus orientation (+0.5 / -0.5),
projected to the hidden size. Positions enter only through RoBERTa's
"relative_key_query" attention terms: with q, k the per-head query and key and
E[d] a learned vector per signed distance d = l - r,

    score(l, r) = (q_l . k_r + q_l . E[l-r] + k_r . E[l-r]) / sqrt(head_dim)

Post-LayerNorm blocks as in RoBERTa. The head predicts, per gene, 4 candidate
100-d labels and 4 likelihoods. Parameter names follow the published glm.bin
through REFERENCE_NAMES (see load_reference_state).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from glmkit.models.layers import Dropout, Linear, linear


@dataclass
class GLMConfig:
    num_layers: int = 19
    hidden_size: int = 1280
    num_heads: int = 10
    intermediate_size: int = 3072      # RobertaConfig's default, not 4 x hidden
    max_position_embeddings: int = 512  # distance table has 2 * 512 - 1 rows
    input_dim: int = 1281               # ESM2 dim + orientation
    label_dim: int = 100                # 99 whitened PCA components + orientation
    num_predictions: int = 4
    layer_norm_eps: float = 1e-12
    dropout: float = 0.1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values, where) -> "GLMConfig":
        """The config recorded in a checkpoint's config.json; one line naming the file if it is not one."""
        from dataclasses import fields

        from glmkit.errors import GlmkitError

        known = {f.name: f.type for f in fields(cls)}
        if not isinstance(values, dict) or set(values) - set(known):
            extra = sorted(set(values) - set(known)) if isinstance(values, dict) else []
            raise GlmkitError(f"{where}: not a gLM configuration" + (f" (unknown key {extra[0]})" if extra else ""))
        for key, value in values.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0 or \
                    (known[key] in (int, "int") and (not isinstance(value, int) or value == 0)):
                raise GlmkitError(f"{where}: gLM configuration {key} = {value!r} is not a valid number")
        cfg = cls(**values)
        if cfg.num_heads == 0 or cfg.hidden_size % cfg.num_heads:
            raise GlmkitError(f"{where}: gLM configuration hidden_size {cfg.hidden_size} is not a multiple of "
                              f"num_heads {cfg.num_heads}")
        return cfg

    def check(self) -> "GLMConfig":
        """Shapes the model can be built with; a usage error naming the option otherwise."""
        from glmkit.errors import GlmkitUsageError

        if self.hidden_size % self.num_heads:
            raise GlmkitUsageError(f"--hidden-size {self.hidden_size} must be a multiple of --num-heads "
                                   f"{self.num_heads}")
        return self


PRESETS = {
    "paper": GLMConfig(),
    "small": GLMConfig(num_layers=6, hidden_size=512, num_heads=8, intermediate_size=2048),
    "tiny": GLMConfig(num_layers=2, hidden_size=32, num_heads=4, intermediate_size=64, dropout=0.0),
}


def preset(name: str, **overrides) -> GLMConfig:
    return replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}).check()


class SelfAttention(nn.Module):
    def __init__(self, cfg: GLMConfig):
        super().__init__()
        self.heads, self.head_dim = cfg.num_heads, cfg.hidden_size // cfg.num_heads
        self.max_pos = cfg.max_position_embeddings
        self.query = Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = Linear(cfg.hidden_size, cfg.hidden_size)
        self.value = Linear(cfg.hidden_size, cfg.hidden_size)
        self.distance_embedding = nn.Embedding(2 * cfg.max_position_embeddings - 1, self.head_dim)
        self.dropout = Dropout(cfg.dropout)  # of the attention probabilities

    def forward(self, x, at, allowed, need_weights=False):
        # x: (N, H) the real genes of the batch; at: (N,) their flat positions in the (B, L) rows, or None: x holds
        # every position (N = B*L); allowed: (B, 1, L, L) bool, may query l attend to key r
        B, L = allowed.shape[0], allowed.shape[-1]
        N, H = x.shape

        # one GEMM for q, k and v (the parameters stay separate, named as in the reference)
        qkv = linear(x, torch.cat([self.query.weight, self.key.weight, self.value.weight]),
                       torch.cat([self.query.bias, self.key.bias, self.value.bias]))          # (N, 3H)
        rows = qkv if at is None else qkv.new_zeros(B * L, 3 * H).index_copy(0, at, qkv)   # (B*L, 3H)
        q, k, v = rows.view(B, L, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # each (B, nh, L, hd)
        pos = torch.arange(L, device=x.device)
        distance = (pos[:, None] - pos[None, :]).clamp(-(self.max_pos - 1), self.max_pos - 1)
        E = self.distance_embedding(distance + self.max_pos - 1).to(q.dtype)   # (L, L, hd)
        rel = torch.einsum("bhld,lrd->bhlr", q, E) + torch.einsum("bhrd,lrd->bhlr", k, E)
        # relative terms as an additive bias of the fused attention; masked keys get the dtype's minimum
        # (not -inf, so that an all-padding query row stays finite, as in transformers)
        bias = (rel / math.sqrt(self.head_dim)).masked_fill(~allowed, torch.finfo(q.dtype).min)
        y = self._attend(q, k, v, bias)                                                   # (B, nh, L, hd)
        probs = None
        if need_weights:  # explicit softmax only when attention maps are asked for
            probs = self._probabilities(q, k, bias)
        y = y.transpose(1, 2).reshape(B * L, H)                                         # (B*L, H)
        return (y if at is None else y.index_select(0, at)), probs

    def _probabilities(self, q, k, bias):  # (B, nh, L, L), q's dtype
        # softmax in float32 whatever the scores' dtype (as CUDA's autocast does): for bf16 scores the same
        # probabilities to rounding, a gradient rounded once instead of computed from rounded probabilities, and
        # on CPU ~4x faster than torch's bf16 softmax, forward and backward, at these shapes (bench/tricks.py softmax)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim) + bias
        return torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)

    def _attend(self, q, k, v, bias):
        p = self.dropout.p if self.training else 0.0
        if p and q.device.type == "cpu":
            # sdpa's CPU kernels have no dropout: with it, sdpa runs this same math and draws the mask with
            # bernoulli_, which took ~1.4x (fp32) to 2x (bf16) as long as these lines (bench/tricks.py
            # attention-dropout)
            return self.dropout(self._probabilities(q, k, bias)) @ v
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=p)


class Block(nn.Module):
    """RoBERTa layer: attention, add & LayerNorm, feed-forward, add & LayerNorm."""

    def __init__(self, cfg: GLMConfig):
        super().__init__()
        self.attention = SelfAttention(cfg)
        self.attention_out = Linear(cfg.hidden_size, cfg.hidden_size)
        self.attention_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.intermediate = Linear(cfg.hidden_size, cfg.intermediate_size)
        self.output = Linear(cfg.intermediate_size, cfg.hidden_size)
        self.output_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = Dropout(cfg.dropout)

    def forward(self, x, at, allowed, need_weights=False):
        a, probs = self.attention(x, at, allowed, need_weights)
        x = self.attention_norm(x + self.dropout(self.attention_out(a)))
        x = self.output_norm(x + self.dropout(self.output(F.gelu(self.intermediate(x)))))
        return x, probs


class GLM(nn.Module):
    def __init__(self, cfg: GLMConfig):
        super().__init__()
        self.cfg = cfg
        self.input_projection = Linear(cfg.input_dim, cfg.hidden_size)
        self.token_type = nn.Parameter(torch.zeros(cfg.hidden_size))  # RoBERTa's token-type-0 vector
        self.input_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.predict = Linear(cfg.hidden_size, cfg.num_predictions * cfg.label_dim)
        self.likelihood = Linear(cfg.hidden_size, cfg.num_predictions)
        self.apply(self._init)

    @staticmethod
    def _init(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):  # RoBERTa's initialisation
            nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def encode(self, features, segments, need_weights=False, layers=None, real_at=None):
        """Hidden states after ``layers`` blocks (default all; 0 = the projected, normalised inputs).

        features: (B, L, input_dim); segments: (B, L) int, 0 for padding, else the sub-contig's number in its
        row: genes attend only within their own segment, so several sub-contigs can share a row (packing).
        Every per-gene operation runs on the real genes only; rows are formed just for attention.
        real_at: the real genes' flat positions (N,), if the caller has them (found here otherwise: a host sync).
        Returns hidden (B, L, H) (zeros at padding) and, when need_weights, the attention probabilities
        [(B, nh, L, L)] per block.
        """
        x, at, attentions = self._genes(features, segments, need_weights, layers, at=real_at)
        return rows_of(x, at, segments.shape), attentions

    def _genes(self, features, segments, need_weights=False, layers=None, at=None, every_position=False):
        """encode's work: the real genes' hidden states (N, H), their flat positions ``at`` (N,) (given, or found
        from ``segments``), attentions. every_position: all B*L positions instead, padding included (``at`` None):
        the real genes' states are the same (padding keys are masked) and every shape is fixed by (B, L)."""
        real = segments > 0                                                   # (B, L)
        allowed = (segments[:, :, None] == segments[:, None, :]) & real[:, None, :]
        allowed = allowed[:, None]                                            # (B, 1, L, L)
        # The real genes' flat positions, found once: every later gather and scatter uses them; a boolean mask
        # in each would make the host wait for the GPU each time (bench/tricks.py gpu-indexing)
        if every_position:
            at, x = None, features.flatten(0, 1)                              # (B*L, input_dim)
        else:
            at = flat_positions(real) if at is None else at                   # (N,)
            x = features.flatten(0, 1).index_select(0, at)                    # (N, input_dim)
        x = self.dropout(self.input_norm(self.input_projection(x) + self.token_type))  # (N, H)
        attentions = []
        for block in self.blocks[:layers]:
            x, probs = block(x, at, allowed, need_weights)
            attentions.append(probs)
        return x, at, (attentions if need_weights else None)

    def forward(self, features, segments, need_weights=False, only=None, real_at=None, every_position=False):
        """hidden (B, L, H), predictions (B, L, 4, label_dim), likelihood logits (B, L, 4), attentions or None.

        only: (B, L) bool: the heads run on these genes alone (training needs the masked ones) and predictions
        come as (N, 4, label_dim), logits as (N, 4), in the order of ``only.nonzero()``; or those genes' flat
        positions (N,) int64, ``flat_positions(only)``, from a caller that needs them too (one host sync less).
        real_at: the real genes' flat positions, ``flat_positions(segments > 0)``, if the caller has them.
        every_position: run every position, padding included (static shapes for CUDA graphs: the real genes'
        results are the same; padding's are meaningless, not zeros) and, without ``only``, the heads too.
        """
        x, at, attentions = self._genes(features, segments, need_weights, at=real_at,   # (N, H): the real genes
                                        every_position=every_position)
        hidden = x.view(*segments.shape, -1) if at is None else rows_of(x, at, segments.shape)
        if only is not None:
            at = only if only.dtype == torch.int64 else flat_positions(only)
            x = hidden.flatten(0, 1).index_select(0, at)                      # (N, H): those genes
        predictions = self.predict(x).view(-1, self.cfg.num_predictions, self.cfg.label_dim)
        logits = self.likelihood(x)
        if only is not None:
            return hidden, predictions, logits, attentions
        if at is None:
            return hidden, predictions.view(*segments.shape, *predictions.shape[1:]), \
                logits.view(*segments.shape, -1), attentions
        return hidden, rows_of(predictions, at, segments.shape), rows_of(logits, at, segments.shape), attentions


def flat_positions(mask: torch.Tensor) -> torch.Tensor:
    """Flat positions (N,) of the True entries of a (B, L) mask, in mask.nonzero()'s order: one host sync."""
    return mask.flatten().nonzero().squeeze(1)


def rows_of(values: torch.Tensor, at: torch.Tensor, shape) -> torch.Tensor:
    """(N, ...) values placed at flat positions ``at`` of zero rows: (B, L, ...)."""
    out = values.new_zeros(shape[0] * shape[1], *values.shape[1:]).index_copy(0, at, values)
    return out.view(*shape, *values.shape[1:])
