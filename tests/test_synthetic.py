"""The planted-grammar corpus: what write_corpus plants is there, and a small gLM trained on it recovers it
while the same model re-initialised does not (the fast version of bench/glm_learning.py --synthetic)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import run
from glmkit.io.elements import ElementStore
from glmkit.io.embeddings import EmbeddingStore
from glmkit.data.synthetic import SyntheticSpec, write_corpus
from glmkit.pipeline.learning import evaluate, reinitialised

SMALL = SyntheticSpec(train_genomes=30, test_genomes=6, genes_per_genome=200, families=150, operon_templates=25,
                      subfamilies=8, paralog_pairs=6, dim=64, seed=1)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    return out, write_corpus(out, SMALL)


def test_the_planted_grammar_is_in_the_stores(corpus):
    out, summary = corpus
    store = EmbeddingStore(out / "embeddings.zarr")
    pairs = [line.split("\t") for line in (out / "test.pairs.tsv").read_text().splitlines()[1:]]
    genes = {}
    for batch in ElementStore(out / "test.zarr").batches():
        e = batch.elements
        for i in range(len(e["id"])):
            genes[e["id"][i]] = (int(e["strand"][i]), int(e["start"][i]), int(e["end"][i]), e["aa"][i])
    assert len(genes) == SMALL.test_genomes * SMALL.genes_per_genome
    same = [(genes[a], genes[b]) for a, b, y in pairs if y == "1"]
    other = [(genes[a], genes[b]) for a, b, y in pairs if y == "0"]
    assert all(x[0] == y[0] for x, y in same)                       # operons lie on one strand
    gap = lambda pair: pair[1][1] - pair[0][2] - 1  # noqa: E731
    inside, outside = np.median([gap(p) for p in same]), np.median([gap(p) for p in other])
    assert inside < 40 < outside                                    # short gaps inside operons ...
    assert min(gap(p) for p in other) < max(gap(p) for p in same)  # ... but the distributions overlap
    truth = [line.split("\t") for line in next((out / "partners").glob("*.tsv")).read_text().splitlines()[1:]]
    assert len(truth) == SMALL.paralog_pairs
    assert all(genes[q][0] == genes[p][0] for q, p in truth)       # partners sit side by side on one strand
    assert all(abs(int(q.rsplit("_", 1)[1]) - int(p.rsplit("_", 1)[1])) == 1 for q, p in truth)
    assert store.model["embed_dim"] == SMALL.dim and len(store) == summary["proteins"] == summary["genes"]


def test_homologs_are_close_in_embedding_and_in_sequence():
    from glmkit.data.synthetic import _Planter

    planter = _Planter(SMALL)
    one, two, other = planter.embedding(5), planter.embedding(5), planter.embedding(6)
    assert np.linalg.norm(one - two) < 0.6 * np.linalg.norm(one - other)
    a, b = planter.protein(5), planter.protein(5)
    identity = np.mean(np.frombuffer(a, np.uint8) == np.frombuffer(b, np.uint8))
    assert 0.6 < identity < 0.9   # MMseqs2 at 50 % puts family members together


@pytest.mark.slow
def test_a_small_glm_learns_the_grammar_and_an_untrained_one_does_not(corpus, tmp_path):
    out, _ = corpus
    r = run("pretrain", out / "train.zarr", "-e", out / "embeddings.zarr", "-o", tmp_path / "glm", "--preset",
            "tiny", "--hidden-size", 128, "--num-heads", 4, "--max-steps", 500, "--batch-size", 32, "--lr", 3e-3,
            "--warmup-steps", 25, "--val-every", 250, "-q", "-t", 2)
    assert r.exit_code == 0, r.stderr
    trained = evaluate(out, tmp_path / "glm", tmp_path / "eval", threads=2, draws=300)
    control = evaluate(out, reinitialised(tmp_path / "glm", tmp_path / "fresh"), tmp_path / "eval-fresh", threads=2,
                       draws=300)
    for result, learnt in ((trained, True), (control, False)):
        acc, ops, par = result["pseudo_accuracy"], result["operons"], result["paralogs"]
        best_baseline = max(acc["mean_label"], acc["neighbour_copy"])
        # thresholds for 500 steps of a 2-layer model (the bench's 20-minute small model is held to the issue's)
        assert (acc["model"] >= 3 * best_baseline) == learnt, acc
        assert (ops["attention"] > ops["distance-strand"]) == learnt, ops
        masked = result["operons_masked"]   # each gene's attention row from a pass with it masked
        assert (masked["attention"] > masked["distance-strand"]) == learnt, masked
        assert (par["exact_correct"] > par["random_high"]) == learnt, par
        assert ops["combined"] >= max(ops["attention"], ops["distance-strand"]) - 0.05, ops


GLM2_GRAMMAR = dict(protein_grammar="markov", intergenic=True)


def _elements(path):
    rows = []
    for batch in ElementStore(path).batches():
        e = batch.elements
        rows += [{k: e[k][i] for k in ("id", "type", "strand", "start", "end", "nt", "aa")} for i in range(len(e["id"]))]
    return rows


def test_the_glm2_grammar_leaves_the_genes_where_they_were(tmp_path):
    """intergenic DNA comes from a stream of its own: the genes' layout, strands and labels stay as without it."""
    plain, rich = tmp_path / "plain", tmp_path / "rich"
    write_corpus(plain, SMALL)
    write_corpus(rich, SyntheticSpec(**{**SMALL.__dict__, "intergenic": True}))
    genes = [{k: r[k] for k in ("id", "strand", "start", "end", "aa")} for r in _elements(rich / "test.zarr")
             if r["type"] == 0]
    assert genes == [{k: r[k] for k in ("id", "strand", "start", "end", "aa")} for r in _elements(plain / "test.zarr")]
    assert (rich / "test.pairs.tsv").read_text() == (plain / "test.pairs.tsv").read_text()


def test_intergenic_dna_carries_the_planted_motifs_on_each_genes_strand(tmp_path):
    from glmkit.data.synthetic import PROMOTER_10, PROMOTER_35, RBS

    write_corpus(tmp_path, SyntheticSpec(**{**SMALL.__dict__, **GLM2_GRAMMAR}))
    rows = _elements(tmp_path / "test.zarr")
    revcomp = lambda s: s[::-1].translate(bytes.maketrans(b"ACGT", b"TGCA"))  # noqa: E731
    checked = {"+": 0, "-": 0, "promoter": 0}
    for k, r in enumerate(rows):
        if r["type"] != 1:
            continue
        left, right = rows[k - 1], rows[k + 1]
        assert left["end"] + 1 == r["start"] and r["end"] + 1 == right["start"] and len(r["nt"]) == r["end"] - r["start"] + 1
        room = len(r["nt"]) // 2 if right["strand"] > 0 and left["strand"] < 0 else len(r["nt"])   # shared
        if right["strand"] > 0 and room >= 13:   # Shine-Dalgarno 7 bp before the start codon
            assert r["nt"][-13:-7] == RBS
            checked["+"] += 1
        if left["strand"] < 0 and room >= 13:   # the minus gene's, on its own strand
            assert revcomp(r["nt"][:13])[:6] == RBS
            checked["-"] += 1
        if right["strand"] > 0 and room >= 50 and r["nt"][-50:-44] == PROMOTER_35:
            assert r["nt"][-27:-21] == PROMOTER_10
            checked["promoter"] += 1
    assert min(checked.values()) > 20, checked
    background = b"".join(r["nt"][:-60] for r in rows if r["type"] == 1 and len(r["nt"]) > 120)
    pairs = np.frombuffer(background, np.uint8)
    follows = {(a, b): np.mean(pairs[1:][pairs[:-1] == a] == b) for a in b"ACGT" for b in b"ACGT"}
    preferred = sorted(max(follows[(a, b)] for b in b"ACGT") for a in b"ACGT")
    assert all(0.5 < p < 0.6 for p in preferred)   # each base's preferred successor: 0.55 (the rest 0.15)


def test_markov_templates_follow_their_chain():
    from glmkit.data.synthetic import AMINO, _Planter

    planter = _Planter(SyntheticSpec(**{**SMALL.__dict__, **GLM2_GRAMMAR}))
    index = {int(a): i for i, a in enumerate(AMINO)}
    top3, total = 0, 0
    for template in planter.templates:
        for a, b in zip(template[:-1], template[1:]):
            top3 += index[int(b)] in np.argsort(planter.transitions[index[int(a)]])[-3:]
            total += 1
    assert 0.77 < top3 / total < 0.83   # 0.8 of the probability on three successors (0.5 + 0.2 + 0.1, +0.03)
    uniform = _Planter(SMALL)
    assert not hasattr(uniform, "transitions")
