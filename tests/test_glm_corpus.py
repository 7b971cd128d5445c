"""glmkit.models.glm.corpus and .normalization, glmkit.data.split: the corpus store, the split by contig, the
streaming normalisation fit, batches."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import link_inputs
from glmkit.data.split import Split, choose_split
from glmkit.genome.windows import windows
from glmkit.models.glm.corpus import GeneReader, build_corpus, make_batch
from glmkit.genome.windows import gene_ranges
from glmkit.models.glm.normalization import Normalization, fit_normalization, training_rows
from glmkit.io.elements import CDS, ElementStore
from glmkit.io.embeddings import EmbeddingStore, sequence_hash


@pytest.fixture(scope="module")
def stores(tmp_path_factory, called_store, embedded_store):
    d = tmp_path_factory.mktemp("glm_data")
    link_inputs(d, called_store, embedded_store)
    corpus = build_corpus([str(d / "el.zarr")], str(d / "emb.zarr"), d / "corpus.zarr", 10, 4)
    return d, corpus


def test_corpus_holds_every_gene_with_its_embedding_in_contig_order(stores):
    d, corpus = stores
    batch = ElementStore(d / "el.zarr").read()
    e = batch.elements
    cds = [i for i in range(len(e["id"])) if e["type"][i] == CDS]
    assert corpus.array("genes/id")[:].tolist() == [e["id"][i] for i in cds]
    np.testing.assert_array_equal(corpus.array("genes/strand")[:], e["strand"][cds])
    store = EmbeddingStore(d / "emb.zarr")
    np.testing.assert_array_equal(corpus.embedding[:], store.get([sequence_hash(e["aa"][i]) for i in cds]))
    # contigs and their sub-contigs: non-overlapping windows of 10 genes, shorter than 4 dropped
    per_contig = [int((e["type"][a:b] == CDS).sum()) for a, b in zip(batch.offsets[:-1], batch.offsets[1:])]
    np.testing.assert_array_equal(np.diff(corpus.array("contigs/offsets")[:]), per_contig)
    offsets = np.concatenate([[0], np.cumsum(per_contig)])
    expected = [(offsets[c] + s, t - s, c) for c, n in enumerate(per_contig) for s, t in windows(n, 10, 4)]
    found = list(zip(corpus.array("subcontigs/start")[:].tolist(), corpus.array("subcontigs/length")[:].tolist(),
                     corpus.array("subcontigs/contig")[:].tolist()))
    assert found == expected


def test_corpus_build_in_small_blocks_equals_one_block(stores, tmp_path, monkeypatch):
    """The reordering spills to disk past its budget: a budget of a few rows must give the same store."""
    import glmkit.models.glm.corpus as glm_corpus
    from glmkit.io import store as store_module

    d, corpus = stores
    real = store_module.gather_rows
    monkeypatch.setattr(glm_corpus, "gather_rows", lambda *a, **k: real(*a[:3], 7, a[4], budget=500))
    small = build_corpus([str(d / "el.zarr")], str(d / "emb.zarr"), tmp_path / "c.zarr", 10, 4)
    np.testing.assert_array_equal(small.embedding[:], corpus.embedding[:])
    assert not list(tmp_path.glob(".*gather*"))


def test_split_is_by_contig_and_seeded(stores):
    _, corpus = stores
    keys = corpus.array("contigs/key")[:]
    split, n_train, n_val = choose_split(corpus, 0.3, seed=1)
    held = split.validation(keys)
    sub_held = held[corpus.array("subcontigs/contig")[:]]
    assert n_val == sub_held.sum() and n_train == (~sub_held).sum() and 0 < n_val < corpus.n_subcontigs
    assert choose_split(corpus, 0.3, seed=1)[0] == split
    assert not np.array_equal(choose_split(corpus, 0.3, seed=2)[0].validation(keys), held)
    # a fraction no contig draws below still holds one contig out
    tiny, n_train, n_val = choose_split(corpus, 1e-9, seed=1)
    assert n_val > 0 and len(np.unique(corpus.array("subcontigs/contig")[:][tiny.validation(keys)[
        corpus.array("subcontigs/contig")[:]]])) == 1
    assert choose_split(corpus, 0.0, seed=1)[2] == 0


def _in_memory_fit(x: np.ndarray, components: int) -> Normalization:
    """The normalisation as glmkit fitted it before streaming (whole matrix, SVD): the reference."""
    x = x.astype(np.float64)
    mean, std = x.mean(0), x.std(0)
    std[std == 0] = 1.0
    z = np.clip((x - mean) / std, -10, 10)
    z = z - z.mean(0)
    k = min(components, z.shape[1], max(1, z.shape[0] - 1))
    _, s, vt = np.linalg.svd(z, full_matrices=False)
    vt = vt[:k] * np.sign(vt[:k][np.arange(k), np.abs(vt[:k]).argmax(1)])[:, None]
    eig = s[:k] ** 2 / max(1, z.shape[0] - 1)
    return Normalization(mean.astype(np.float32), std.astype(np.float32), vt.T.astype(np.float32),
                         (1.0 / np.sqrt(np.maximum(eig, 1e-12))).astype(np.float32))


@pytest.mark.parametrize("block", [1, 37, 1000])
def test_streaming_fit_equals_the_in_memory_fit(block):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(800, 24)) @ rng.normal(size=(24, 24)) * np.linspace(0.1, 3, 24) + 5
    x[3, 2] = 400.0  # beyond 10 standard deviations: clipped before the PCA
    reference = _in_memory_fit(x, 8)
    streamed = Normalization.fit(lambda: (x[i:i + block] for i in range(0, len(x), block)), components=8)
    for name, value in reference.arrays().items():
        np.testing.assert_allclose(getattr(streamed, name), value, rtol=1e-6, atol=1e-7, err_msg=name)
    z = streamed.standardize(x.astype(np.float32))
    np.testing.assert_allclose(np.cov(streamed.labels(z).T), np.eye(8), atol=1e-2)  # whitened
    assert streamed.standardize(np.full((1, 24), 1e9, np.float32)).max() == 10.0


def test_fit_normalization_uses_the_distinct_training_proteins(stores):
    d, corpus = stores
    split, _, _ = choose_split(corpus, 0.3, seed=1)
    store = EmbeddingStore(d / "emb.zarr")
    used = training_rows(corpus, split, len(store))
    keys, sub_contig = corpus.array("contigs/key")[:], corpus.array("subcontigs/contig")[:]
    train = ~split.validation(keys)[sub_contig]
    genes = gene_ranges(corpus.array("subcontigs/start")[:][train], corpus.array("subcontigs/length")[:][train])
    expected = np.zeros(len(store), bool)
    expected[corpus.array("genes/row")[:][genes]] = True
    np.testing.assert_array_equal(used, expected)
    fitted = fit_normalization(corpus, str(d / "emb.zarr"), split)
    reference = _in_memory_fit(store.embedding[:][expected], 63)
    for name, value in reference.arrays().items():
        np.testing.assert_allclose(getattr(fitted, name), value, rtol=1e-5, atol=1e-6, err_msg=name)


def test_gene_ranges():
    np.testing.assert_array_equal(gene_ranges(np.array([5, 0, 20]), np.array([2, 3, 1])), [5, 6, 0, 1, 2, 20])
    assert gene_ranges(np.zeros(0), np.zeros(0)).size == 0


def test_make_batch_matches_a_naive_assembly(stores):
    d, corpus = stores
    split, _, _ = choose_split(corpus, 0.3, seed=1)
    norm = fit_normalization(corpus, str(d / "emb.zarr"), split)
    starts, lengths = corpus.array("subcontigs/start")[:], corpus.array("subcontigs/length")[:]
    rows = [np.array([0]), np.array([3, 5]), np.array([2])]
    features, labels, segments = make_batch(GeneReader(corpus, cache_chunks=1), starts, lengths, rows, norm, 20)
    emb, strand = corpus.embedding[:], corpus.array("genes/strand")[:]
    for b, row in enumerate(rows):
        pos = 0
        for seg, i in enumerate(row, 1):
            n = lengths[i]
            x = norm.standardize(emb[starts[i]:starts[i] + n])
            o = np.where(strand[starts[i]:starts[i] + n] > 0, 0.5, -0.5)
            np.testing.assert_allclose(features[b, pos:pos + n, :-1], x, atol=1e-6)
            np.testing.assert_array_equal(features[b, pos:pos + n, -1], o)
            np.testing.assert_allclose(labels[b, pos:pos + n, :-1], norm.labels(x), rtol=1e-3, atol=1e-3)  # float32 GEMMs
            assert (segments[b, pos:pos + n] == seg).all()
            pos += n
        assert (segments[b, pos:] == 0).all() and not features[b, pos:].any()


def test_split_rule():
    split = Split(seed=0, cut=0.5)
    keys = np.arange(10_000, dtype=np.uint64)
    share = split.validation(keys).mean()
    assert 0.47 < share < 0.53
