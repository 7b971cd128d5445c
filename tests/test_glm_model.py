"""glmkit.models.glm.model against a naive implementation of the paper's formulas, on glm.bin-style random weights."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from glmkit.models.glm.model import GLM, GLMConfig, preset
from glmkit.models.glm.weights import load_reference_state, reference_config

CFG = GLMConfig(num_layers=2, hidden_size=24, num_heads=3, intermediate_size=40, max_position_embeddings=16,
                input_dim=9, label_dim=5, num_predictions=4, dropout=0.0)


def reference_state(cfg: GLMConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under the key names of the published glm.bin (plus keys it carries that are unused)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.randn(*shape, generator=g) * 0.3  # noqa: E731
    H, I, hd = cfg.hidden_size, cfg.intermediate_size, cfg.hidden_size // cfg.num_heads
    sd = {"dense.weight": r(H, cfg.input_dim), "dense.bias": r(H),
          "roberta.roberta.embeddings.token_type_embeddings.weight": r(1, H),
          "roberta.roberta.embeddings.LayerNorm.weight": 1 + r(H), "roberta.roberta.embeddings.LayerNorm.bias": r(H),
          "roberta.lm_head.dense.weight": r(cfg.num_predictions * cfg.label_dim, H),
          "roberta.lm_head.dense.bias": r(cfg.num_predictions * cfg.label_dim),
          "roberta.lm_head.dense_prob.weight": r(cfg.num_predictions, H),
          "roberta.lm_head.dense_prob.bias": r(cfg.num_predictions),
          "roberta.contact_head.regression.weight": r(1, 4),             # present in glm.bin, unused
          "roberta.roberta.embeddings.word_embeddings.weight": r(3, H)}   # likewise
    for i in range(cfg.num_layers):
        p = f"roberta.roberta.encoder.layer.{i}."
        for name, shape in (("attention.self.query", (H, H)), ("attention.self.key", (H, H)),
                            ("attention.self.value", (H, H)), ("attention.output.dense", (H, H)),
                            ("intermediate.dense", (I, H)), ("output.dense", (H, I))):
            sd[f"{p}{name}.weight"], sd[f"{p}{name}.bias"] = r(*shape), r(shape[0])
        for name in ("attention.output.LayerNorm", "output.LayerNorm"):
            sd[f"{p}{name}.weight"], sd[f"{p}{name}.bias"] = 1 + r(H), r(H)
        sd[f"{p}attention.self.distance_embedding.weight"] = r(2 * cfg.max_position_embeddings - 1, hd)
    return sd


def naive_forward(sd, cfg: GLMConfig, features: torch.Tensor):
    """One sub-contig (L, input_dim), element by element from the formulas in the module docstring."""
    def ln(x, w, b):
        mu, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
        return (x - mu) / torch.sqrt(var + cfg.layer_norm_eps) * w + b

    def lin(x, name):
        return x @ sd[f"{name}.weight"].T + sd[f"{name}.bias"]

    E = "roberta.roberta.embeddings."
    x = ln(lin(features, "dense") + sd[f"{E}token_type_embeddings.weight"][0], sd[f"{E}LayerNorm.weight"],
           sd[f"{E}LayerNorm.bias"])
    L, hd, P = len(features), cfg.hidden_size // cfg.num_heads, cfg.max_position_embeddings
    for i in range(cfg.num_layers):
        p = f"roberta.roberta.encoder.layer.{i}."
        q, k, v = (lin(x, f"{p}attention.self.{n}") for n in ("query", "key", "value"))
        dist = sd[f"{p}attention.self.distance_embedding.weight"]
        heads = []
        for h in range(cfg.num_heads):
            s = slice(h * hd, (h + 1) * hd)
            score = torch.empty(L, L, dtype=torch.float64)
            for l in range(L):
                for r in range(L):
                    e = dist[l - r + P - 1]
                    score[l, r] = (q[l, s] @ k[r, s] + q[l, s] @ e + k[r, s] @ e) / math.sqrt(hd)
            heads.append(torch.softmax(score, -1) @ v[:, s])
        a = lin(torch.cat(heads, -1), f"{p}attention.output.dense")
        x = ln(x + a, sd[f"{p}attention.output.LayerNorm.weight"], sd[f"{p}attention.output.LayerNorm.bias"])
        f = lin(torch.nn.functional.gelu(lin(x, f"{p}intermediate.dense")), f"{p}output.dense")
        x = ln(x + f, sd[f"{p}output.LayerNorm.weight"], sd[f"{p}output.LayerNorm.bias"])
    preds = lin(x, "roberta.lm_head.dense").view(L, cfg.num_predictions, cfg.label_dim)
    return x, preds, lin(x, "roberta.lm_head.dense_prob")


def test_reference_layout_matches_naive_formula_with_padding_and_packing():
    sd = {k: v.double() for k, v in reference_state(CFG).items()}
    assert reference_config(sd) == replace(CFG, dropout=GLMConfig().dropout)  # dropout is not in a state dict
    model = load_reference_state(GLM(CFG).double(), sd).eval()
    g = torch.Generator().manual_seed(1)
    a, b, c = (torch.randn(n, CFG.input_dim, generator=g, dtype=torch.float64) for n in (7, 4, 10))
    # row 0: a then b packed together; row 1: c; row 2: b alone, padded
    features = torch.zeros(3, 11, CFG.input_dim, dtype=torch.float64)
    segments = torch.zeros(3, 11, dtype=torch.long)
    features[0, :7], features[0, 7:11], segments[0, :7], segments[0, 7:11] = a, b, 1, 2
    features[1, :10], segments[1, :10] = c, 1
    features[2, :4], segments[2, :4] = b, 1
    with torch.no_grad():
        hidden, preds, logits, attn = model(features, segments, need_weights=True)
    for row, span, sub in ((0, slice(0, 7), a), (0, slice(7, 11), b), (1, slice(0, 10), c), (2, slice(0, 4), b)):
        nh, npred, nlog = naive_forward(sd, CFG, sub)
        torch.testing.assert_close(hidden[row, span], nh, atol=1e-9, rtol=1e-9)
        torch.testing.assert_close(preds[row, span], npred, atol=1e-9, rtol=1e-9)
        torch.testing.assert_close(logits[row, span], nlog, atol=1e-9, rtol=1e-9)
    assert len(attn) == CFG.num_layers and attn[0].shape == (3, CFG.num_heads, 11, 11)
    torch.testing.assert_close(attn[0][0, :, :7, 7:], torch.zeros(CFG.num_heads, 7, 4, dtype=torch.float64))
    torch.testing.assert_close(attn[1][0, :, :7, :7].sum(-1), torch.ones(CFG.num_heads, 7, dtype=torch.float64))


def test_heads_on_some_genes_by_mask_or_by_their_flat_positions():
    model = GLM(CFG).eval()
    g = torch.Generator().manual_seed(2)
    features = torch.randn(2, 6, CFG.input_dim, generator=g)
    segments = torch.tensor([[1, 1, 1, 2, 2, 0], [1, 1, 1, 1, 0, 0]])
    only = torch.tensor([[True, False, False, True, False, False], [False, False, True, True, False, False]])
    with torch.no_grad():
        _, preds, logits, _ = model(features, segments)
        _, p_mask, l_mask, _ = model(features, segments, only=only)
        _, p_pos, l_pos, _ = model(features, segments, only=torch.tensor([0, 3, 8, 9]))
    torch.testing.assert_close(p_mask, preds[only])
    torch.testing.assert_close(l_mask, logits[only])
    torch.testing.assert_close(p_pos, p_mask, rtol=0, atol=0)
    torch.testing.assert_close(l_pos, l_mask, rtol=0, atol=0)


def test_presets():
    assert preset("paper").num_layers == 19 and preset("paper").hidden_size == 1280 and preset("paper").num_heads == 10
    assert preset("paper").intermediate_size == 3072
    assert preset("small", input_dim=321).input_dim == 321


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_attention_dropout_drops_probabilities_as_written(dtype):
    """Training on CPU: softmax(q k^T / sqrt(hd) + bias), its entries zeroed with probability p and the rest scaled
    by 1 / (1 - p), times v (the formula, with the mask of the same draw); evaluation: no dropout, sdpa."""
    from glmkit.models.glm.model import SelfAttention

    attention = SelfAttention(replace(CFG, dropout=0.25))
    B, nh, L, hd = 2, CFG.num_heads, 7, CFG.hidden_size // CFG.num_heads
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, nh, L, hd, generator=g).to(dtype) for _ in range(3))
    bias = torch.randn(B, nh, L, L, generator=g).to(dtype).masked_fill(torch.rand(B, 1, L, L, generator=g) < 0.2,
                                                                       torch.finfo(dtype).min)
    probs = torch.softmax(q.double() @ k.double().transpose(-1, -2) / math.sqrt(hd) + bias.double(), -1)
    torch.manual_seed(1)
    trained = attention.train()._attend(q, k, v, bias)
    torch.manual_seed(1)
    keep = attention.dropout(torch.ones(B, nh, L, L)) != 0
    assert 0 < keep.double().mean() < 1
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=3e-2, rtol=3e-2)
    torch.testing.assert_close(trained.double(), (probs * keep / 0.75) @ v.double(), **tol)
    torch.testing.assert_close(attention.eval()._attend(q, k, v, bias).double(), probs @ v.double(), **tol)


def test_attention_probabilities_softmax_in_float32():
    """bf16 scores: the probabilities are float32's softmax of those scores rounded to bf16 once, and so is their
    gradient (torch's bf16 softmax backward works from the rounded probabilities: off by up to ~5e-3); float32 is
    unchanged."""
    from glmkit.models.glm.model import SelfAttention

    attention = SelfAttention(CFG)
    B, nh, L, hd = 3, CFG.num_heads, 9, CFG.hidden_size // CFG.num_heads
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.bfloat16, torch.float32):
        q, k = (torch.randn(B, nh, L, hd, generator=g).to(dtype) for _ in range(2))
        bias = (3 * torch.randn(B, nh, L, L, generator=g)).to(dtype).requires_grad_()
        upstream = torch.randn(B, nh, L, L, generator=g).to(dtype)
        probs = attention._probabilities(q, k, bias)
        probs.backward(upstream)
        scores = (q @ k.transpose(-1, -2) / math.sqrt(hd) + bias).detach().float().requires_grad_()
        expected = torch.softmax(scores, -1)
        expected.backward(upstream.float())
        assert probs.dtype == dtype
        assert torch.equal(probs, expected.to(dtype))
        assert torch.equal(bias.grad, scores.grad.to(dtype))
