"""gLM2's architecture against a naive, loop-by-loop transcription of each block written here (RoPE by its
formula, attention by an explicit softmax), and its tokens."""

from __future__ import annotations

import math

import torch

from conftest import published_glm2_folder

from glmkit.models.glm2.model import GLM2, GLM2Config, chunk_positions
from glmkit.models.layers import swiglu_hidden

CFG = GLM2Config(dim=24, depth=2, heads=3, swiglu_multiple_of=8)


def naive_forward(model: GLM2, tokens: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """One chunk, float64, position by position."""
    sd = {k: v.double() for k, v in model.state_dict().items()}
    cfg, L = model.cfg, len(tokens)
    hd = cfg.dim // cfg.heads

    def rms(x, w):
        return w * x / math.sqrt(float((x ** 2).mean()) + cfg.norm_eps)

    def rope(vec, pos):
        out = vec.clone()
        for i in range(hd // 2):
            angle = pos / cfg.rope_base ** (2 * i / hd)
            a, b = vec[i], vec[i + hd // 2]
            out[i], out[i + hd // 2] = a * math.cos(angle) - b * math.sin(angle), b * math.cos(angle) + a * math.sin(angle)
        return out

    x = [sd["tok_embeddings.weight"][t] for t in tokens]
    for n in range(cfg.depth):
        p = f"layers.{n}."
        normed = [rms(v, sd[p + "attention_norm.weight"]) for v in x]
        qkv = [sd[p + "attention.wqkv.weight"] @ v for v in normed]
        out = []
        for i in range(L):
            heads = []
            for h in range(cfg.heads):
                s = slice(h * hd, (h + 1) * hd)
                q = rope(qkv[i][0 * cfg.dim:1 * cfg.dim][s], i)
                scores = torch.tensor([float(q @ rope(qkv[j][cfg.dim:2 * cfg.dim][s], j)) / math.sqrt(hd)
                                       for j in range(L)], dtype=torch.float64)
                weights = torch.softmax(scores, 0)
                heads.append(sum(weights[j] * qkv[j][2 * cfg.dim:][s] for j in range(L)))
            out.append(x[i] + sd[p + "attention.wo.weight"] @ torch.cat(heads))
        x = []
        for v in out:
            f = rms(v, sd[p + "ffn_norm.weight"])
            a, b = sd[p + "feed_forward.w1.weight"] @ f, sd[p + "feed_forward.w3.weight"] @ f
            x.append(v + sd[p + "feed_forward.w2.weight"] @ (a * torch.sigmoid(a) * b))
    hidden = torch.stack(x)
    logits = torch.stack([sd["head.weight"] @ rms(v, sd["head_norm.weight"]) for v in x])
    return hidden, logits


def test_matches_the_naive_transcription_with_packing_and_padding():
    torch.manual_seed(0)
    model = GLM2(CFG)
    with torch.no_grad():  # norms away from 1 so that a misplaced weight shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.3 * torch.randn_like(p))
    model = model.eval()
    g = torch.Generator().manual_seed(1)
    a, b, c = (torch.randint(4, 35, (n,), generator=g).tolist() for n in (7, 5, 11))
    tokens = torch.zeros(3, 12, dtype=torch.long)
    segments = torch.zeros(3, 12, dtype=torch.long)
    tokens[0, :7], tokens[0, 7:12], segments[0, :7], segments[0, 7:12] = torch.tensor(a), torch.tensor(b), 1, 2
    tokens[1, :11], segments[1, :11] = torch.tensor(c), 1
    tokens[2, :5], segments[2, :5] = torch.tensor(b), 1                     # b alone, padded
    with torch.no_grad():
        logits, hidden = model.double()(tokens, segments)
    for row, span, chunk in ((0, slice(0, 7), a), (0, slice(7, 12), b), (1, slice(0, 11), c), (2, slice(0, 5), b)):
        nh, nl = naive_forward(model, chunk)
        # the rotary tables are float32 (as the published model computes them): agreement to ~1e-9, not 1e-15
        torch.testing.assert_close(hidden[row, span], nh, atol=1e-7, rtol=1e-6)
        torch.testing.assert_close(logits[row, span], nl, atol=1e-7, rtol=1e-6)
    assert torch.isfinite(logits).all()  # padding positions too


def test_float32_agrees_with_float64_to_1e5():
    torch.manual_seed(2)
    model = GLM2(CFG).eval()
    tokens = torch.randint(4, 35, (2, 40))
    segments = torch.ones(2, 40, dtype=torch.long)
    with torch.no_grad():
        single, _ = model(tokens, segments)
        double, _ = model.double()(tokens, segments)
    assert (single.double() - double).abs().max() < 1e-5


def test_chunk_positions_restart_per_chunk():
    segments = torch.tensor([[1, 1, 1, 2, 2, 0, 0], [1, 1, 1, 1, 1, 1, 1]])
    assert chunk_positions(segments).tolist() == [[0, 1, 2, 0, 1, 0, 1], [0, 1, 2, 3, 4, 5, 6]]


def test_feed_forward_width_is_the_published_rounding():
    assert swiglu_hidden(640, 256) == 1792 and swiglu_hidden(1280, 256) == 3584


def test_published_folders_load_by_name_whole_or_sharded(tmp_path):
    from glmkit.models.glm2.weights import load_glm2_folder, published_name

    for name, shard in (("whole", None), ("sharded", "20KB")):
        written = published_glm2_folder(tmp_path / name, CFG, shard)
        if shard:
            assert (tmp_path / name / "model.safetensors.index.json").exists()
        model, digest = load_glm2_folder(tmp_path / name)
        ours = model.state_dict()
        assert {published_name(k) for k in ours} == set(written)
        for key, value in ours.items():
            torch.testing.assert_close(value, written[published_name(key)], rtol=0, atol=0)
        assert len(digest) == 64


def test_published_folders_of_another_shape_or_incomplete_are_refused(tmp_path):
    import pytest

    from glmkit.errors import GlmkitError
    from glmkit.models.glm2.weights import load_glm2_folder

    published_glm2_folder(tmp_path / "wide", CFG, dim=48)
    with pytest.raises(GlmkitError, match=r"glm2\.tok_embeddings\.weight has shape \(37, 24\); config\.json makes "
                                          r"it \(37, 48\)"):
        load_glm2_folder(tmp_path / "wide")
    published_glm2_folder(tmp_path / "partial", CFG, drop="w3")
    with pytest.raises(GlmkitError, match=r"no tensor glm2\.encoder\.layers\.1\.feed_forward\.w3\.weight"):
        load_glm2_folder(tmp_path / "partial")
