"""glmkit.models.esm2.model against fair-esm's own ESM2 and transformers' EsmModel, on random weights."""

from __future__ import annotations

import random

import pytest
import torch

from glmkit.errors import GlmkitError
from glmkit.models.esm2.tokens import ALPHABET, tokenize
from glmkit.models.esm2.weights import load_esm2, load_fair_esm_file, load_hf_folder

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


def test_fair_esm_file_in_torchs_legacy_format_loads_too(tmp_path, esm_checkpoint):
    """Files are memory-mapped when loaded; one written in torch's pre-1.6 (not zip) format cannot be, and is read
    whole instead, to the same weights."""
    import argparse

    path = esm_checkpoint[0]
    with torch.serialization.safe_globals([argparse.Namespace]):
        data = torch.load(path, weights_only=True)
    torch.save(data, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    mapped, legacy = load_fair_esm_file(path).model.state_dict(), load_fair_esm_file(tmp_path / "legacy.pt").model
    assert all(torch.equal(mapped[k], v) for k, v in legacy.state_dict().items())


def _transformers_folder(path, masked_lm: bool, **save_options):
    """A random-weight ESM2 saved by the installed transformers' own save_pretrained (5.x: LayerNorms written
    as gamma/beta); returns the folder and transformers' model for reference outputs."""
    import transformers

    torch.manual_seed(5)
    cfg = transformers.EsmConfig(vocab_size=33, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                 intermediate_size=128, position_embedding_type="rotary", token_dropout=True,
                                 pad_token_id=1, mask_token_id=32, emb_layer_norm_before=False, layer_norm_eps=1e-5,
                                 max_position_embeddings=1026)
    model = (transformers.EsmForMaskedLM(cfg) if masked_lm else transformers.EsmModel(cfg, add_pooling_layer=False))
    with torch.no_grad():  # LayerNorms away from 1/0, so that a swapped weight and bias would show
        for name, p in model.named_parameters():
            p.add_(torch.randn_like(p) * (0.3 if "LayerNorm" in name or "layer_norm" in name else 0.05))
    model.save_pretrained(path, **save_options)
    return path, (model.esm if masked_lm else model).eval()


@pytest.mark.parametrize("masked_lm, save_options", [
    (True, {}),                           # EsmForMaskedLM, one model.safetensors
    (False, {}),                          # EsmModel (no "esm." prefix)
    (True, {"max_shard_size": "20KB"}),   # sharded, with model.safetensors.index.json
])
def test_folders_saved_by_installed_transformers(tmp_path, masked_lm, save_options):
    folder, reference = _transformers_folder(tmp_path / "hf", masked_lm, **save_options)
    if save_options:
        assert (folder / "model.safetensors.index.json").exists() and len(list(folder.glob("*.safetensors"))) > 1
    ours = load_hf_folder(folder).model
    seqs = random_proteins(5)
    tokens = tokenize([s.encode() for s in seqs], 1022)
    with torch.no_grad():
        mine = ours(tokens)
        theirs = reference(input_ids=tokens, attention_mask=tokens.ne(1)).last_hidden_state
    for i, s in enumerate(seqs):
        torch.testing.assert_close(mine[i, :len(s) + 2], theirs[i, :len(s) + 2], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("folder", ["masked_lm", "model_bin"])
def test_folders_saved_by_transformers_4(folder):
    """Folders written by transformers 4.57's save_pretrained (test_data/make_hf_esm_v4.py: safetensors and
    pytorch_model.bin), with transformers 4's own hidden states for the same tokens."""
    from conftest import TEST_DATA
    import numpy as np

    expected = np.load(TEST_DATA / "hf_esm_v4" / "expected.npz")
    model = load_hf_folder(TEST_DATA / "hf_esm_v4" / folder).model
    tokens = torch.from_numpy(expected["tokens"])
    with torch.no_grad():
        mine = model(tokens).numpy()
    real = expected["tokens"] != 1
    np.testing.assert_allclose(mine[real], expected["hidden"][real], atol=1e-5, rtol=1e-5)


def test_hf_folder_equals_the_same_weights_from_fair_esm(tmp_path, esm_checkpoint):
    """fair-esm's weights put into transformers' EsmModel and saved by it load to the same model as the .pt."""
    import transformers

    path, fair, _ = esm_checkpoint
    cfg = transformers.EsmConfig(vocab_size=33, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                 intermediate_size=256, position_embedding_type="rotary", token_dropout=True,
                                 pad_token_id=1, mask_token_id=32, emb_layer_norm_before=False, layer_norm_eps=1e-5)
    hf = transformers.EsmModel(cfg, add_pooling_layer=False)
    names = {"self_attn.q_proj": "attention.self.query", "self_attn.k_proj": "attention.self.key",
             "self_attn.v_proj": "attention.self.value", "self_attn.out_proj": "attention.output.dense",
             "self_attn_layer_norm": "attention.LayerNorm", "fc1": "intermediate.dense", "fc2": "output.dense",
             "final_layer_norm": "LayerNorm"}
    theirs = fair.state_dict()
    state = {"embeddings.word_embeddings.weight": theirs["embed_tokens.weight"],
             **{f"encoder.emb_layer_norm_after.{k}": theirs[f"emb_layer_norm_after.{k}"] for k in ("weight", "bias")}}
    for i in range(2):
        for a, b in names.items():
            for kind in ("weight", "bias"):
                state[f"encoder.layer.{i}.{b}.{kind}"] = theirs[f"layers.{i}.{a}.{kind}"]
    missing = hf.load_state_dict(state, strict=False).missing_keys
    assert not [k for k in missing if "contact_head" not in k and "inv_freq" not in k], missing
    hf.save_pretrained(tmp_path / "hf")
    tokens = tokenize([s.encode() for s in random_proteins(5)], 1022)
    with torch.no_grad():
        torch.testing.assert_close(load_hf_folder(tmp_path / "hf").model(tokens), load_fair_esm_file(path).model(tokens),
                                   atol=1e-6, rtol=1e-6)


def test_hf_folder_with_missing_tensors_names_the_weight(tmp_path):
    from safetensors.torch import load_file, save_file

    folder, _ = _transformers_folder(tmp_path / "hf", True)
    weights = load_file(folder / "model.safetensors")
    save_file({k: v for k, v in weights.items() if "layer.1.intermediate" not in k}, folder / "model.safetensors")
    with pytest.raises(GlmkitError, match=r"hf: missing ESM2 weight encoder\.layer\.1\.intermediate"):
        load_hf_folder(folder)


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
