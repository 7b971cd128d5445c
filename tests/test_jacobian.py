"""glmkit jacobian against a direct, unoptimised implementation of the algorithm (the whole L x A x L x B tensor,
one mutant per forward pass), for ESM2 (fair-esm's own model giving the logits) and gLM2; resume; outputs;
bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import SHARED_DATA, TEST_DATA, assert_one_line_error, build_store, cds, igs, link_inputs, make_fair_esm_checkpoint, run
from glmkit.io.contacts import read_contacts

AMINO = "LAGVSERTIDPKQNFYMHWC"


def naive_contacts(logits, tokens, positions, substitutes, outputs, valid, symmetrise_jacobian):
    """The algorithm as written: J[i, a, j, b] = f(x with x_i = a)[j, b] - f(x)[j, b] (0 where not valid); centre
    each axis (of more than one value); symmetrise J (ESM2) or the map (gLM2); norm; zero the diagonal; APC; zero
    the diagonal."""
    fx = logits(tokens)[positions][:, outputs]
    L, A, B = len(positions), len(substitutes), len(outputs)
    J = np.zeros((L, A, L, B))
    for i in range(L):
        for a in range(A):
            if valid[i, a]:
                x = tokens.clone()
                x[positions[i]] = int(substitutes[a])
                J[i, a] = logits(x)[positions][:, outputs] - fx
    for axis in range(4):
        if J.shape[axis] > 1:
            J -= J.mean(axis, keepdims=True)
    if symmetrise_jacobian:
        J = (J + J.transpose(2, 3, 0, 1)) / 2
    C = np.sqrt(np.square(J).sum((1, 3)))
    if not symmetrise_jacobian:
        C = (C + C.T) / 2
    np.fill_diagonal(C, 0)
    C -= C.sum(0, keepdims=True) * C.sum(1, keepdims=True) / C.sum()
    np.fill_diagonal(C, 0)
    return C


@pytest.fixture(scope="module")
def esm(tmp_path_factory):
    d = tmp_path_factory.mktemp("jac_esm")
    model, alphabet = make_fair_esm_checkpoint(d / "esm.pt", layers=2, dim=32, heads=4, seed=4)
    (d / "pair.faa").write_text(">A first\nMKVLAAGIWTREQ\n>B second\nMSTNPKLLEEAGYC\n")
    return d, model, alphabet


def _fair_esm_logits(model):
    def logits(tokens):
        with torch.no_grad():
            return model(tokens[None])["logits"][0].double().numpy()
    return logits


@pytest.mark.parametrize("fast,threads", [(False, 1), (False, 2), (True, 2)])   # 2: passes side by side
def test_esm2_equals_the_direct_algorithm_on_fair_esm(esm, tmp_path, fast, threads):
    d, model, alphabet = esm
    out = tmp_path / "c.npy"
    args = ["jacobian", d / "pair.faa", "-m", d / "esm.pt", "-o", out, "--block", "5", "--batch-size", "7",
            "--threads", threads, "-q"] + (["--fast"] if fast else [])
    result = run(*args)
    assert result.exit_code == 0, result.stderr
    sequence = "MKVLAAGIWTREQ" + "MSTNPKLLEEAGYC"
    tokens = torch.tensor([alphabet.cls_idx] + [alphabet.get_idx(c) for c in sequence] + [alphabet.eos_idx])
    outputs = np.array([alphabet.get_idx(c) for c in AMINO])
    substitutes = np.array([alphabet.mask_idx]) if fast else outputs
    expected = naive_contacts(_fair_esm_logits(model), tokens, np.arange(1, len(sequence) + 1), substitutes,
                              outputs, np.ones((len(sequence), len(substitutes)), bool), not fast)
    np.testing.assert_allclose(read_contacts(out), expected, atol=1e-5, rtol=0)
    assert np.allclose(read_contacts(out), read_contacts(out).T)
    # the TSV: the largest pairs of the map, in order, with which residue of which record each side is
    rows = [line.split("\t") for line in (tmp_path / "c.tsv").read_text().splitlines()]
    assert rows[0][:3] == ["i", "j", "element_i"] and len(rows) == 101
    values = [float(r[9]) for r in rows[1:]]
    assert values == sorted(values, reverse=True)
    i, j = int(rows[1][0]) - 1, int(rows[1][1]) - 1
    assert values[0] == pytest.approx(float(expected[i, j]), abs=1e-5)
    assert rows[1][2] == ("A" if i < 13 else "B") and int(rows[1][3]) == (i + 1 if i < 13 else i - 12)
    assert rows[1][8] == ("true" if (i < 13) != (j < 13) else "false")
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(tmp_path.glob(".c.npy.work*"))


@pytest.fixture(scope="module")
def glm2(tmp_path_factory, called_store):
    d = tmp_path_factory.mktemp("jac_glm2")
    link_inputs(d, called_store)
    result = run("pretrain", d / "el.zarr", "--arch", "glm2", "-o", d / "m", "--preset", "tiny", "--context", "512",
                 "--max-steps", "3", "--batch-size", "4", "--val-fraction", "0.2", "--lr", "3e-2", "-q")
    assert result.exit_code == 0, result.stderr
    return d


def _glm2_logits(model):
    def logits(tokens):
        with torch.no_grad():
            return model(tokens[None], torch.ones_like(tokens)[None])[0][0].double().numpy()
    return logits


@pytest.mark.parametrize("fast,threads", [(False, 2), (True, 1)])
def test_glm2_equals_the_direct_algorithm_with_both_modalities(glm2, tmp_path, fast, threads):
    from glmkit.models.glm2.weights import load_glm2
    from glmkit.models.glm2.tokens import ID, MASK, PLUS

    (tmp_path / "mixed.fasta").write_text(">gene\nMKVLAW\n>igs\nACGTTGCAAT\n")
    out = tmp_path / "c.zarr"
    result = run("jacobian", tmp_path / "mixed.fasta", "-m", glm2 / "m", "-o", out, "--block", "4", "--batch-size",
                 "9", "--threads", threads, "-q", *(["--fast"] if fast else []))
    assert result.exit_code == 0, result.stderr
    tokens = torch.tensor([PLUS] + [ID[c] for c in "MKVLAW"] + [PLUS] + [ID[c] for c in "acgttgcaat"])
    outputs = np.array([ID[c] for c in "atcg"] + [ID[c] for c in AMINO])
    t = tokens.numpy()
    is_nt, is_aa = np.isin(t, outputs[:4]), np.isin(t, outputs[4:])
    if fast:
        substitutes, valid = np.array([MASK]), (is_aa | is_nt)[:, None]
    else:  # as the gLM2 notebook: a position's own modality only; special and strand tokens never
        substitutes = outputs
        valid = (is_nt[:, None] & np.isin(outputs, outputs[:4])[None]) | \
            (is_aa[:, None] & np.isin(outputs, outputs[4:])[None])
    expected = naive_contacts(_glm2_logits(load_glm2(glm2 / "m").model), tokens, np.arange(len(t)), substitutes,
                              outputs, valid, False)
    np.testing.assert_allclose(read_contacts(out), expected, atol=1e-5, rtol=0)
    import zarr

    g = zarr.open_group(str(out))
    assert g["positions/element"][:].tolist() == [-1] + [0] * 6 + [-1] + [1] * 10
    assert g["positions/token"][:2].tolist() == ["<+>", "M"] and g["elements/name"][:].tolist() == ["gene", "igs"]
    assert run("validate", out, "-q").exit_code == 0


NUC_TOKENS, AA_TOKENS, MASK_TOKEN_ID = tuple(range(29, 33)), tuple(range(4, 24)), 35   # as the notebook names them


def notebook_contacts(logits, input_ids: list[int], fast: bool) -> np.ndarray:
    """The gLM2 notebook's get_categorical_jacobian and jac_to_contact (TattaBio/gLM2,
    categorical_jacobian_gLM2.ipynb), written out here: logits over NUC_TOKENS + AA_TOKENS; each position set to
    every one of those tokens (or, fast, to <mask>: one row, broadcast over the substitutes by the masking);
    J zeroed where neither the position nor the substitute is a nucleotide, or both amino acids; every axis of
    more than one value centred; the norm over the token axes; symmetrised (the token axes are not 20 x 20); the
    diagonal removed, APC, the diagonal removed."""
    all_tokens = list(NUC_TOKENS + AA_TOKENS)
    ids = torch.tensor(input_ids)
    L, A = len(input_ids), len(all_tokens)
    fx = logits(ids)[:, all_tokens]
    fx_h = np.zeros((L, 1 if fast else A, L, A))
    for n in range(L):
        for k, token in enumerate([MASK_TOKEN_ID] if fast else all_tokens):
            x = ids.clone()
            x[n] = token
            fx_h[n, k] = logits(x)[:, all_tokens]
    jac = fx_h - fx
    is_nuc_pos = np.isin(input_ids, NUC_TOKENS)[:, None, None, None]
    is_aa_pos = np.isin(input_ids, AA_TOKENS)[:, None, None, None]
    is_nuc_token = np.isin(all_tokens, NUC_TOKENS)[None, :, None, None]
    is_aa_token = np.isin(all_tokens, AA_TOKENS)[None, :, None, None]
    X = np.where((is_nuc_pos & is_nuc_token) | (is_aa_pos & is_aa_token), jac, 0.0)   # (L, A, L, A): broadcast
    for axis in range(4):
        if X.shape[axis] > 1:
            X = X - X.mean(axis, keepdims=True)
    C = np.sqrt(np.square(X).sum((1, 3)))
    C = (C + C.T) / 2
    np.fill_diagonal(C, 0)
    C = C - C.sum(0, keepdims=True) * C.sum(1, keepdims=True) / C.sum()
    np.fill_diagonal(C, 0)
    return C


@pytest.fixture(scope="module")
def published_glm2(tmp_path_factory):
    from conftest import published_glm2_folder
    from glmkit.models.glm2.model import GLM2Config

    folder = tmp_path_factory.mktemp("jac_published") / "gLM2"
    published_glm2_folder(folder, GLM2Config(dim=32, depth=2, heads=4, swiglu_multiple_of=16))
    return folder


@pytest.mark.parametrize("mode", ["full", "notebook-fast"])
def test_a_published_folder_gives_the_notebooks_map(published_glm2, tmp_path, mode):
    """The notebook's input is the published tokenizer's ids of "<+>PROTEIN<+>dna..." (no <cls>; J and N as
    <unk>, whose rows, like X's and the strand tokens', are zero): glmkit's map on the same FASTA equals it, full
    and with --fast --fast-mode notebook."""
    from conftest import published_tokenizer_ids
    from glmkit.models.glm2.weights import load_glm2

    (tmp_path / "in.fasta").write_text(">a\nMKVLJAWX\n>b\nMSTNPK\n>igs\nACGTTGCNAT\n")
    fast = ["--fast", "--fast-mode", "notebook"] if mode != "full" else []
    out = tmp_path / "c.zarr"
    result = run("jacobian", tmp_path / "in.fasta", "-m", published_glm2, "-o", out, "--block", "5",
                 "--threads", "1", *fast)
    assert result.exit_code == 0, result.stderr
    assert "'a' residue 5 is 'J'" in result.stderr and "'igs' base 8 is 'N'" in result.stderr   # warned, read as <unk>
    ids = published_tokenizer_ids("<+>MKVLJAWX<+>MSTNPK<+>acgttgcnat")
    import zarr

    assert zarr.open_group(str(out))["positions/token"][:].tolist()[:6] == ["<+>", "M", "K", "V", "L", "<unk>"]
    expected = notebook_contacts(_glm2_logits(load_glm2(published_glm2).model), ids, fast=bool(fast))
    np.testing.assert_allclose(read_contacts(out), expected, atol=2e-5, rtol=0)


def test_glmkits_fast_map_is_the_notebooks_over_sqrt_10_3_for_one_modality(published_glm2, tmp_path):
    """glmkit's --fast takes the <mask> row as it is; the notebook copies it to each substitute of the position's
    modality (zeros at the other's) before centring: for one modality its map is sqrt(10/3) times glmkit's; with
    both, its nucleotide rows are negated before the centring over positions, and the maps differ."""
    from conftest import published_tokenizer_ids
    from glmkit.models.glm2.weights import load_glm2

    logits = _glm2_logits(load_glm2(published_glm2).model)
    (tmp_path / "p.faa").write_text(">a\nMKVLAW\n>b\nMSTNPKQ\n")
    (tmp_path / "m.fasta").write_text(">a\nMKVLAW\n>igs\nACGTTGCAAT\n")
    for name, text in (("p.faa", "<+>MKVLAW<+>MSTNPKQ"), ("m.fasta", "<+>MKVLAW<+>acgttgcaat")):
        out = tmp_path / f"{name}.npy"
        assert run("jacobian", tmp_path / name, "-m", published_glm2, "-o", out, "--fast", "-q",
                   "--threads", "1").exit_code == 0
        notebook = notebook_contacts(logits, published_tokenizer_ids(text), fast=True)
        if name == "p.faa":
            np.testing.assert_allclose(notebook, np.sqrt(10 / 3) * read_contacts(out), atol=2e-5, rtol=0)
        else:
            assert np.abs(notebook - np.sqrt(10 / 3) * read_contacts(out)).max() > 1e-2


def test_an_old_checkpoint_keeps_its_leading_cls(glm2, tmp_path):
    """A glmkit gLM2 checkpoint from before the tokens record was trained with <cls> before each chunk: its map
    has that row, and unknown protein letters are X."""
    import json
    import shutil

    from glmkit.models.glm2.weights import load_glm2
    from glmkit.models.glm2.tokens import CLS, ID, MASK, PLUS

    old = tmp_path / "old"
    shutil.copytree(glm2 / "m" / "checkpoint", old)
    meta = json.loads((old / "config.json").read_text())
    del meta["tokens"], meta["corpus"]["tokens"]
    (old / "config.json").write_text(json.dumps(meta))
    (tmp_path / "p.faa").write_text(">a\nMKJVLAW\n")
    out = tmp_path / "c.npy"
    assert run("jacobian", tmp_path / "p.faa", "-m", old, "-o", out, "--fast", "-q", "--threads", "1").exit_code == 0
    tokens = torch.tensor([CLS, PLUS] + [ID[c] for c in "MKXVLAW"])
    t = tokens.numpy()
    valid = np.isin(t, [ID[c] for c in AMINO])[:, None]
    outputs = np.array([ID[c] for c in "atcg"] + [ID[c] for c in AMINO])
    expected = naive_contacts(_glm2_logits(load_glm2(old).model), tokens, np.arange(len(t)), np.array([MASK]),
                              outputs, valid, False)
    np.testing.assert_allclose(read_contacts(out), expected, atol=1e-5, rtol=0)


def test_element_store_regions(glm2, tmp_path):
    store = build_store(tmp_path / "el.zarr", [("c1", 500, [cds(aa=b"MKVL"), igs(nt=b"ACGTA"), cds(aa=b"MWW", strand=-1),
                                                            cds(aa=b"MAC")])])
    out = tmp_path / "r.zarr"
    result = run("jacobian", store, "--region", "c1:2-3", "-m", glm2 / "m", "-o", out, "-q", "--threads", "1")
    assert result.exit_code == 0, result.stderr
    import zarr

    g = zarr.open_group(str(out))
    assert g["positions/token"][:].tolist() == ["<+>", "a", "c", "g", "t", "a", "<->", "M", "W", "W"]
    assert g["elements/name"][:].tolist() == ["c1_igs1", "c1_2"]


def test_a_region_names_a_sub_contig_of_a_filtered_store(glm2, tmp_path):
    """filter names its pieces CONTIG:START-END, so a region's own ':' cannot be the only separator."""
    store = build_store(tmp_path / "el.zarr", [("c1:11-500", 490, [cds(aa=b"MKVL"), igs(nt=b"ACGTA"),
                                                                   cds(aa=b"MWW", strand=-1)])])
    for region, names in (("c1:11-500:2-3", ["c1:11-500_igs1", "c1:11-500_2"]),
                          ("c1:11-500", ["c1:11-500_1", "c1:11-500_igs1", "c1:11-500_2"])):
        out = tmp_path / f"{len(names)}.zarr"
        result = run("jacobian", store, "--region", region, "-m", glm2 / "m", "-o", out, "-q", "--threads", "1")
        assert result.exit_code == 0, result.stderr
        import zarr

        assert zarr.open_group(str(out))["elements/name"][:].tolist() == names


def test_proteins_with_their_stop_codon_as_glmkit_call_writes_them(esm, tmp_path):
    d = esm[0]
    (tmp_path / "stops.faa").write_text((d / "pair.faa").read_text().replace("EQ\n", "EQ*\n").replace("YC\n", "YC*\n"))
    for name in ("pair", "stops"):
        source = d / "pair.faa" if name == "pair" else tmp_path / "stops.faa"
        r = run("jacobian", source, "-m", d / "esm.pt", "-o", tmp_path / f"{name}.npy", "--fast", "-q", "-t", 1)
        assert r.exit_code == 0, r.stderr
    assert "*" in (tmp_path / "stops.faa").read_text()
    np.testing.assert_array_equal(np.load(tmp_path / "pair.npy"), np.load(tmp_path / "stops.npy"))


def _killed_after_two_blocks(jac, d, out, options, monkeypatch):
    real, calls = jac._block, []

    def die_on_third(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        return real(*a, **k)

    monkeypatch.setattr(jac, "_block", die_on_third)
    with pytest.raises(KeyboardInterrupt):
        jac.run_jacobian(str(d / "pair.faa"), str(d / "esm.pt"), str(out), options)
    monkeypatch.setattr(jac, "_block", real)


def test_a_killed_run_resumes_from_its_blocks(esm, tmp_path, monkeypatch):
    import glmkit.commands.jacobian as jac

    d = esm[0]
    options = jac.JacobianOptions(block=4, threads=1)
    jac.run_jacobian(str(d / "pair.faa"), str(d / "esm.pt"), str(tmp_path / "whole.npy"), options)
    real = jac._block
    _killed_after_two_blocks(jac, d, tmp_path / "again.npy", options, monkeypatch)
    assert len(list((tmp_path / ".again.npy.work").glob("done-*"))) == 2 and not (tmp_path / "again.npy").exists()
    computed = []
    monkeypatch.setattr(jac, "_block", lambda *a, **k: computed.append(1) or real(*a, **k))
    jac.run_jacobian(str(d / "pair.faa"), str(d / "esm.pt"), str(tmp_path / "again.npy"), options)
    assert len(computed) == 7 - 2  # 27 positions in blocks of 4: 7 blocks, 2 kept
    np.testing.assert_array_equal(np.load(tmp_path / "whole.npy"), np.load(tmp_path / "again.npy"))


@pytest.mark.parametrize("change", [{"precision": "bf16"}, {"batch_size": 2}, {"fast": True}])
def test_resume_with_an_option_that_changes_the_blocks_starts_over(esm, tmp_path, monkeypatch, change):
    """Blocks computed at fp32 are never mixed with blocks at bf16 (or another batch size, or --fast)."""
    import glmkit.commands.jacobian as jac

    d = esm[0]
    base = dict(block=4, threads=1)
    _killed_after_two_blocks(jac, d, tmp_path / "m.npy", jac.JacobianOptions(**base), monkeypatch)
    computed = []
    real = jac._block
    monkeypatch.setattr(jac, "_block", lambda *a, **k: computed.append(1) or real(*a, **k))
    jac.run_jacobian(str(d / "pair.faa"), str(d / "esm.pt"), str(tmp_path / "m.npy"),
                     jac.JacobianOptions(**base, **change))
    assert len(computed) == 7   # every block again: none of the fp32 run's was kept
    jac.run_jacobian(str(d / "pair.faa"), str(d / "esm.pt"), str(tmp_path / "fresh.npy"),
                     jac.JacobianOptions(**base, **change))
    np.testing.assert_array_equal(np.load(tmp_path / "m.npy"), np.load(tmp_path / "fresh.npy"))


def test_a_block_larger_than_the_input_is_the_input(esm, tmp_path):
    """--block 10^8 used to ask zarr for an impossible chunk: a block is never longer than the input."""
    import glmkit.commands.jacobian as jac

    d = esm[0]
    for name, block in (("default", 16), ("huge", 100_000_000)):
        jac.run_jacobian(str(d / "pair.faa"), str(d / "esm.pt"), str(tmp_path / f"{name}.npy"),
                         jac.JacobianOptions(block=block, threads=1))
    np.testing.assert_array_equal(np.load(tmp_path / "default.npy"), np.load(tmp_path / "huge.npy"))


def test_a_saved_block_changed_in_place_is_never_used(esm, tmp_path, monkeypatch):
    """A zeroed work chunk (same size) used to be reused as a finished block: now its checksum refuses it."""
    import glmkit.commands.jacobian as jac
    from glmkit.errors import GlmkitError

    d = esm[0]
    options = jac.JacobianOptions(block=4, threads=1)
    _killed_after_two_blocks(jac, d, tmp_path / "m.npy", options, monkeypatch)
    chunk = next(p for p in sorted((tmp_path / ".m.npy.work" / "jacobian.zarr" / "c").rglob("*")) if p.is_file())
    chunk.write_bytes(bytes(chunk.stat().st_size))
    with pytest.raises(GlmkitError, match=r"chunk .* is damaged \(checksum mismatch\); the work folder was "
                                          r"discarded: run the same command again"):
        jac.run_jacobian(str(d / "pair.faa"), str(d / "esm.pt"), str(tmp_path / "m.npy"), options)
    assert not (tmp_path / "m.npy").exists() and not (tmp_path / ".m.npy.work").exists()
    jac.run_jacobian(str(d / "pair.faa"), str(d / "esm.pt"), str(tmp_path / "m.npy"), options)
    jac.run_jacobian(str(d / "pair.faa"), str(d / "esm.pt"), str(tmp_path / "whole.npy"), options)
    np.testing.assert_array_equal(np.load(tmp_path / "m.npy"), np.load(tmp_path / "whole.npy"))


def test_hugging_face_esm_with_and_without_a_head(tmp_path):
    """EsmForMaskedLM saved by transformers' own save_pretrained: logits equal transformers' forward; an EsmModel
    folder (no LM head) is refused in one line."""
    from transformers import EsmConfig, EsmForMaskedLM

    from glmkit.models.esm2.tokens import tokenize
    from glmkit.models.esm2.weights import load_esm2

    config = EsmConfig(vocab_size=33, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=128, position_embedding_type="rotary", token_dropout=True, mask_token_id=32,
                       pad_token_id=1)
    torch.manual_seed(0)
    model = EsmForMaskedLM(config).eval()
    model.save_pretrained(tmp_path / "mlm")
    tokens = tokenize([b"MKVLAAGW"], 1022)
    with torch.no_grad():
        expected = model(tokens).logits
        ours = load_esm2(str(tmp_path / "mlm")).model.logits(tokens)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)
    (tmp_path / "p.faa").write_text(">p\nMKVLAAGWK\n")
    assert_one_line_error(run("jacobian", tmp_path / "p.faa", "-m", TEST_DATA / "hf_esm_v4" / "model_bin", "-o",
                              tmp_path / "c.npy"), "model_bin", "no language-model head")


def test_bad_inputs(esm, glm2, tmp_path, esm_checkpoint):
    d = esm[0]
    (tmp_path / "j.faa").write_text(">odd\nMKJV\n")
    assert_one_line_error(run("jacobian", tmp_path / "j.faa", "-m", d / "esm.pt", "-o", tmp_path / "a.npy"),
                          "j.faa", "'odd' residue 3 is 'J'", "no token for")
    (tmp_path / "empty.faa").write_text(">e\n\n>p\nMKV\n")
    assert_one_line_error(run("jacobian", tmp_path / "empty.faa", "-m", d / "esm.pt", "-o", tmp_path / "a.npy"),
                          "empty.faa", "'e' has no sequence")
    (tmp_path / "long.faa").write_text(">long\n" + "MKVL" * 300 + "\n")
    assert_one_line_error(run("jacobian", tmp_path / "long.faa", "-m", d / "esm.pt", "-o", tmp_path / "a.npy"),
                          "1,200 residues", "at most 1,022")
    assert_one_line_error(run("jacobian", glm2 / "el.zarr", "--region", "contig_1:5-99999", "-m", glm2 / "m", "-o",
                              tmp_path / "a.npy"), "lies outside contig 'contig_1'")
    assert_one_line_error(run("jacobian", glm2 / "el.zarr", "--region", "nope", "-m", glm2 / "m", "-o",
                              tmp_path / "a.npy"), "no contig 'nope'")
    (tmp_path / "dna.fasta").write_text(">igs\nACGTTACGTACGGA\n")
    assert_one_line_error(run("jacobian", tmp_path / "dna.fasta", "-m", d / "esm.pt", "-o", tmp_path / "a.npy"),
                          "'igs' is DNA; ESM2 reads proteins")
    assert_one_line_error(run("jacobian", tmp_path / "dna.fasta", "-m", d / "esm.pt", "-o", tmp_path / "a.txt"),
                          "name the contact map .npy or .zarr", status=2)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".a.")]


@pytest.mark.skipif(not (SHARED_DATA / "moda_modc_2onk.fasta").exists(), reason="../shared not present")
def test_the_papers_inputs_run(glm2, tmp_path):
    """2ONK ModA/ModC and the aspV region read as the paper's inputs (random weights: no real contacts)."""
    result = run("jacobian", SHARED_DATA / "ecoli_aspV_region.fasta", "-m", glm2 / "m", "-o", tmp_path / "t.npy",
                 "--fast", "-q")
    assert result.exit_code == 0, result.stderr
    assert read_contacts(tmp_path / "t.npy").shape == (223, 223)  # <+>, 222 nucleotides (no <cls>)
