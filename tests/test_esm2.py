"""glmkit.models.esm2 against fair-esm's own ESM2 and transformers' EsmModel, on random weights."""

from __future__ import annotations

import json
import random

import pytest
import torch

from glmkit.errors import GlmkitError
from glmkit.models.esm2 import ALPHABET, load_esm2, load_fair_esm_file, load_hf_folder, tokenize

AA = "ACDEFGHIKLMNPQRSTVWYXBUZO"


def random_proteins(n, lo=5, hi=120, seed=0):
    rng = random.Random(seed)
    return ["".join(rng.choice(AA[:20]) for _ in range(rng.randint(lo, hi))) for _ in range(n)]


def test_alphabet_and_tokens_match_fair_esm(esm_checkpoint):
    _, _, alphabet = esm_checkpoint
    assert list(ALPHABET) == alphabet.all_toks
    seqs = random_proteins(6) + ["XBUZO"]
    _, _, theirs = alphabet.get_batch_converter(50)([(str(i), s) for i, s in enumerate(seqs)])
    assert torch.equal(tokenize([s.encode() for s in seqs], 50), theirs)


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_hidden_states_equal_fair_esm(esm_checkpoint, layer):
    path, reference, alphabet = esm_checkpoint
    ours = load_fair_esm_file(path).model
    seqs = random_proteins(8)  # unequal lengths: padding in the batch
    _, _, tokens = alphabet.get_batch_converter()([(str(i), s) for i, s in enumerate(seqs)])
    with torch.no_grad():
        theirs = reference(tokens, repr_layers=[layer])["representations"][layer]
        mine = ours(tokens, layer)
    for i, s in enumerate(seqs):  # real tokens only: padded positions are never used
        torch.testing.assert_close(mine[i, :len(s) + 2], theirs[i, :len(s) + 2], atol=1e-5, rtol=1e-5)


def _hf_folder(path, fair_checkpoint):
    """Write a Hugging Face EsmForMaskedLM-style folder holding the same weights (names mapped here, independently)."""
    from safetensors.torch import save_file

    data = torch.load(fair_checkpoint, weights_only=False)
    args, fair = data["cfg"]["model"], {k.replace("encoder.sentence_encoder.", ""): v for k, v in data["model"].items()}
    hf = {"esm.embeddings.word_embeddings.weight": fair["embed_tokens.weight"],
          "esm.encoder.emb_layer_norm_after.weight": fair["emb_layer_norm_after.weight"],
          "esm.encoder.emb_layer_norm_after.bias": fair["emb_layer_norm_after.bias"]}
    names = {"self_attn.q_proj": "attention.self.query", "self_attn.k_proj": "attention.self.key",
             "self_attn.v_proj": "attention.self.value", "self_attn.out_proj": "attention.output.dense",
             "self_attn_layer_norm": "attention.LayerNorm", "fc1": "intermediate.dense", "fc2": "output.dense",
             "final_layer_norm": "LayerNorm"}
    for i in range(args.encoder_layers):
        for theirs, ours in names.items():
            for kind in ("weight", "bias"):
                hf[f"esm.encoder.layer.{i}.{ours}.{kind}"] = fair[f"layers.{i}.{theirs}.{kind}"].contiguous()
    path.mkdir()
    save_file(hf, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps({
        "model_type": "esm", "architectures": ["EsmForMaskedLM"], "vocab_size": 33, "hidden_size": args.encoder_embed_dim,
        "num_hidden_layers": args.encoder_layers, "num_attention_heads": args.encoder_attention_heads,
        "intermediate_size": 4 * args.encoder_embed_dim, "position_embedding_type": "rotary", "token_dropout": True,
        "layer_norm_eps": 1e-5, "emb_layer_norm_before": False, "pad_token_id": 1, "mask_token_id": 32,
        "max_position_embeddings": 1026, "hidden_act": "gelu", "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0}))
    return path


def test_hf_folder_equals_pt_and_transformers(tmp_path, esm_checkpoint):
    path, _, alphabet = esm_checkpoint
    folder = _hf_folder(tmp_path / "hf", path)
    from_pt, from_hf = load_fair_esm_file(path).model, load_hf_folder(folder).model
    seqs = random_proteins(5)
    tokens = tokenize([s.encode() for s in seqs], 1022)
    with torch.no_grad():
        a, b = from_pt(tokens), from_hf(tokens)
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
        import transformers

        reference = transformers.EsmModel.from_pretrained(folder, add_pooling_layer=False).eval()
        c = reference(input_ids=tokens, attention_mask=tokens.ne(1)).last_hidden_state
    for i, s in enumerate(seqs):
        torch.testing.assert_close(b[i, :len(s) + 2], c[i, :len(s) + 2], atol=1e-5, rtol=1e-5)


def test_load_errors(tmp_path):
    with pytest.raises(GlmkitError, match="unknown model 'esm3_huge'"):
        load_esm2("esm3_huge")
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(GlmkitError, match="broken.pt: not a readable fair-esm checkpoint"):
        load_esm2(str(tmp_path / "broken.pt"))
    torch.save({"something": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(GlmkitError, match="other.pt: not an ESM2 checkpoint"):
        load_esm2(str(tmp_path / "other.pt"))
    (tmp_path / "notesm").mkdir()
    (tmp_path / "notesm" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(GlmkitError, match="not an ESM2 model"):
        load_esm2(str(tmp_path / "notesm"))


def test_refuses_arbitrary_pickles(tmp_path):
    """weights_only stays on: a checkpoint carrying an arbitrary object is refused, not executed."""
    from fractions import Fraction  # any class outside the allow-list stands for a malicious one

    torch.save({"cfg": {"model": Fraction(1, 3)}, "model": {}}, tmp_path / "pickle.pt")
    with pytest.raises(GlmkitError, match="not a readable fair-esm checkpoint"):
        load_fair_esm_file(tmp_path / "pickle.pt")


def test_hub_name_without_network_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(GlmkitError, match="could not download esm2_t6_8M_UR50D.*--model"):
        load_esm2("esm2_t6_8M_UR50D")


def test_hub_name_uses_the_torch_hub_cache(tmp_path, monkeypatch, esm_checkpoint):
    import shutil

    (tmp_path / "checkpoints").mkdir()
    shutil.copy(esm_checkpoint[0], tmp_path / "checkpoints" / "esm2_t6_8M_UR50D.pt")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    loaded = load_esm2("esm2_t6_8M_UR50D")
    assert loaded.name == "esm2_t6_8M_UR50D" and loaded.model.cfg.num_layers == 2


def test_onednn_linear_swap_keeps_results(esm_checkpoint):
    from glmkit.models.device import OneDNNLinear, for_cpu_inference

    model = load_fair_esm_file(esm_checkpoint[0]).model
    tokens = tokenize([s.encode() for s in random_proteins(6)], 1022)
    with torch.inference_mode():
        before = model(tokens)
        swapped = for_cpu_inference(model)
        after = swapped(tokens)
    if torch.backends.mkldnn.is_available():
        assert isinstance(swapped.layers[0].qkv, OneDNNLinear) and isinstance(swapped.layers[1].fc2, OneDNNLinear)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)
