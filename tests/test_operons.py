"""glmkit operons: pair features against a naive reading of the context store, labels from known operons,
fit/predict/eval on cases with a known answer, and bad input."""

from __future__ import annotations

import json
from urllib.parse import unquote

import numpy as np
import pytest
import zarr

from conftest import SHARED_DATA, assert_one_line_error, link_inputs, run
from glmkit.io.context import ContextStore
from glmkit.io.elements import CDS, ElementStore
from glmkit.io.operon_model import read_classifier, write_classifier
from glmkit.commands.operons import attention_features, neighbour_pairs

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def ctx(tmp_path_factory, called_store, embedded_store):
    d = tmp_path_factory.mktemp("operons")
    link_inputs(d, called_store, embedded_store)
    assert run("pretrain", d / "el.zarr", "-e", d / "emb.zarr", "-o", d / "glm", "--preset", "tiny", "--max-steps",
               3, "--batch-size", 4, "-q", "-t", 1).exit_code == 0
    assert run("contextualize", d / "el.zarr", "-e", d / "emb.zarr", "-m", d / "glm", "-o", d / "ctx.zarr",
               "--attention", "-q", "-t", 1).exit_code == 0
    assert run("contextualize", d / "el.zarr", "-e", d / "emb.zarr", "-m", d / "glm", "-o", d / "plain.zarr",
               "-q", "-t", 1).exit_code == 0
    return d


def _genes(d):
    """(id, contig, start, end, strand) of every CDS, in order."""
    out = []
    for batch in ElementStore(d / "el.zarr").batches():
        contig_of = np.repeat(np.arange(len(batch.counts)), batch.counts)
        for i in np.flatnonzero(batch.elements["type"] == CDS):
            e = batch.elements
            out.append((e["id"][i], batch.contigs["name"][contig_of[i]], int(e["start"][i]), int(e["end"][i]),
                        int(e["strand"][i])))
    return out


def test_pair_features_are_the_attention_of_the_window_where_the_pair_is_most_central(ctx):
    store = ContextStore(ctx / "ctx.zarr")
    pairs = neighbour_pairs(store, [str(ctx / "el.zarr")])
    got = attention_features(store, pairs)
    raw = zarr.open_group(str(ctx / "ctx.zarr"), mode="r")
    first, size = raw["windows/first_gene"][:], raw["windows/n_genes"][:]
    offsets, data = raw["attention/offsets"][:], raw["attention/data"][:]
    L, H = store.config["num_layers"], store.config["num_heads"]
    genes = _genes(ctx)
    expected_pairs = [k for k in range(len(genes) - 1) if genes[k][1] == genes[k + 1][1]]
    assert list(pairs.a) == expected_pairs
    for k, a in enumerate(pairs.a):
        best, best_score = None, -1
        for w in range(len(first)):  # naive: every window, the first on ties
            if first[w] <= a and a + 1 < first[w] + size[w]:
                score = min(a - first[w], first[w] + size[w] - 1 - (a + 1))
                if score > best_score:
                    best, best_score = w, score
        n = size[best]
        maps = data[offsets[best]:offsets[best + 1]].reshape(L, H, n, n)
        np.testing.assert_array_equal(got[k], maps[:, :, a - first[best], a - first[best] + 1].reshape(-1))
        gap = genes[a + 1][2] - genes[a][3] - 1
        assert pairs.distance[k] == gap


def _pairs_tsv(path, rows):
    path.write_text("gene_a\tgene_b\tlabel\n" + "".join(f"{a}\t{b}\t{y}\n" for a, b, y in rows))
    return path


def test_distance_strand_features_that_separate_are_fitted_perfectly(ctx, tmp_path):
    genes = _genes(ctx)
    rows = []
    for a, b in zip(genes, genes[1:]):
        if a[1] == b[1]:
            rows.append((a[0], b[0], int(a[4] == b[4] and b[2] - a[3] - 1 <= 40)))
    known = _pairs_tsv(tmp_path / "pairs.tsv", rows)
    r = run("operons", "eval", ctx / "ctx.zarr", "-e", ctx / "el.zarr", "--known", known, "-o", tmp_path / "ev",
            "--folds", 3, "-q")
    assert r.exit_code == 0, r.stderr
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["predictors"]["distance-strand"]["ap_mean"] == pytest.approx(1.0)
    assert summary["predictors"]["combined"]["ap_mean"] > 0.95
    assert summary["evaluated_pairs"] == len(rows) and summary["positive"] == sum(r[2] for r in rows)
    for name in ("pr.png", "heads.png", "report.tsv", "head_correlation.tsv"):
        assert (tmp_path / "ev" / name).stat().st_size > 0
    r = run("operons", "fit", ctx / "ctx.zarr", "-e", ctx / "el.zarr", "--known", known, "-o",
            tmp_path / "d.safetensors", "--features", "distance-strand", "-q")
    assert r.exit_code == 0, r.stderr
    r = run("operons", "fit", ctx / "ctx.zarr", "-e", ctx / "el.zarr", "--known", known, "-o",
            tmp_path / "again.safetensors", "--features", "distance-strand", "-q")
    assert r.exit_code == 0, r.stderr   # the same classifier, byte for byte (Snakemake's checksums rely on it)
    assert (tmp_path / "again.safetensors").read_bytes() == (tmp_path / "d.safetensors").read_bytes()
    r = run("operons", "predict", ctx / "ctx.zarr", "-e", ctx / "el.zarr", "-c", tmp_path / "d.safetensors", "-o",
            tmp_path / "p.tsv", "--gff", tmp_path / "p.gff", "-q")
    assert r.exit_code == 0, r.stderr
    lines = [line.split("\t") for line in (tmp_path / "p.tsv").read_text().splitlines()]
    assert lines[0] == ["contig", "gene_a", "gene_b", "relation", "distance", "probability", "call"]
    calls = {(x[1], x[2]): x[6] == "true" for x in lines[1:]}
    assert calls == {(a, b): bool(y) for a, b, y in rows}
    gff = [x.split("\t") for x in (tmp_path / "p.gff").read_text().splitlines() if not x.startswith("#")]
    # each operon is a maximal run of linked pairs: its genes in order, from its first gene's start to its last's end
    by_id = {g[0]: g for g in genes}
    linked = {a for a, b, y in rows if y}
    for row in gff:
        members = unquote(dict(item.split("=") for item in row[8].split(";"))["genes"]).split(",")
        assert len(members) >= 2 and all(m in linked for m in members[:-1])
        assert int(row[3]) == min(by_id[m][2] for m in members) and int(row[4]) == max(by_id[m][3] for m in members)
    assert sum(len(unquote(dict(i.split("=") for i in row[8].split(";"))["genes"]).split(",")) - 1
               for row in gff) == len(linked)


def test_predict_applies_a_classifier_of_attention_features(ctx, tmp_path):
    """A classifier that reads one head alone: probabilities are the sigmoid of that head's attention."""
    store = ContextStore(ctx / "ctx.zarr")
    L, H = store.config["num_layers"], store.config["num_heads"]
    coef = np.zeros(L * H)
    coef[1 * H + 2] = 8.0
    write_classifier(tmp_path / "one_head.safetensors", "attention", coef, np.array([-1.0]), L, H)
    assert read_classifier(tmp_path / "one_head.safetensors")["kind"] == "attention"
    r = run("operons", "predict", ctx / "ctx.zarr", "-e", ctx / "el.zarr", "-c", tmp_path / "one_head.safetensors",
            "-o", tmp_path / "p.tsv", "-q")
    assert r.exit_code == 0, r.stderr
    pairs = neighbour_pairs(store, [str(ctx / "el.zarr")])
    head = attention_features(store, pairs)[:, 1 * H + 2].astype(np.float64)
    got = np.array([float(x.split("\t")[5]) for x in (tmp_path / "p.tsv").read_text().splitlines()[1:]])
    np.testing.assert_allclose(got, 1 / (1 + np.exp(-(8 * head - 1))), atol=1e-6)


def test_log_attention_features_are_each_heads_attention_then_its_log(ctx, tmp_path):
    """--log-attention: 2 x layers x heads features, [a, log(a + 0.001)]; a classifier on one head's log gives the
    sigmoid of that log, written by hand here; fit records the choice and predict follows it."""
    store = ContextStore(ctx / "ctx.zarr")
    L, H = store.config["num_layers"], store.config["num_heads"]
    coef = np.zeros(2 * L * H)
    coef[L * H + 1] = 1.5                      # the log of layer 0, head 1
    write_classifier(tmp_path / "log.safetensors", "attention", coef, np.array([0.5]), L, H, log_attention=True)
    assert read_classifier(tmp_path / "log.safetensors")["log_attention"] is True
    r = run("operons", "predict", ctx / "ctx.zarr", "-e", ctx / "el.zarr", "-c", tmp_path / "log.safetensors",
            "-o", tmp_path / "p.tsv", "-q")
    assert r.exit_code == 0, r.stderr
    head = attention_features(store, neighbour_pairs(store, [str(ctx / "el.zarr")]))[:, 1].astype(np.float64)
    got = np.array([float(x.split("\t")[5]) for x in (tmp_path / "p.tsv").read_text().splitlines()[1:]])
    np.testing.assert_allclose(got, 1 / (1 + np.exp(-(1.5 * np.log(head + 1e-3) + 0.5))), atol=1e-5)

    genes = _genes(ctx)
    rows = [(a[0], b[0], k % 2) for k, (a, b) in enumerate(zip(genes, genes[1:])) if a[1] == b[1]]
    known = _pairs_tsv(tmp_path / "pairs.tsv", rows)
    assert run("operons", "fit", ctx / "ctx.zarr", "-e", ctx / "el.zarr", "--known", known, "--log-attention",
               "-o", tmp_path / "fit.safetensors", "-q").exit_code == 0
    fitted = read_classifier(tmp_path / "fit.safetensors")
    assert fitted["log_attention"] and len(fitted["coef"]) == 2 * L * H
    assert run("operons", "predict", ctx / "ctx.zarr", "-e", ctx / "el.zarr", "-c", tmp_path / "fit.safetensors",
               "-o", tmp_path / "p2.tsv", "-q").exit_code == 0
    assert run("operons", "eval", ctx / "ctx.zarr", "-e", ctx / "el.zarr", "--known", known, "--log-attention",
               "--folds", 2, "-o", tmp_path / "ev", "-q").exit_code == 0
    assert json.loads((tmp_path / "ev" / "summary.json").read_text())["log_attention"] is True


def test_bad_inputs_are_one_line(ctx, tmp_path):
    genes = _genes(ctx)
    rows = [(a[0], b[0], 1) for a, b in zip(genes, genes[1:]) if a[1] == b[1]][:20]
    rows += [(a[0], b[0], 0) for a, b in zip(genes[40:], genes[41:]) if a[1] == b[1]][:20]
    known = _pairs_tsv(tmp_path / "pairs.tsv", rows)
    ghost = _pairs_tsv(tmp_path / "ghost.tsv", [("nope_1", "nope_2", 1), ("nope_3", "nope_4", 0)])
    base = ["-e", ctx / "el.zarr"]
    assert_one_line_error(run("operons", "fit", ctx / "ctx.zarr", *base, "--known", ghost, "-o", tmp_path / "c"),
                          "ghost.tsv: no neighbouring gene pair of the context could be labelled")
    assert_one_line_error(run("operons", "fit", ctx / "plain.zarr", *base, "--known", known, "-o", tmp_path / "c"),
                          "plain.zarr: no attention maps", "--attention")
    L, H = ContextStore(ctx / "ctx.zarr").config["num_layers"], ContextStore(ctx / "ctx.zarr").config["num_heads"]
    write_classifier(tmp_path / "wrong.safetensors", "attention", np.zeros(190), np.zeros(1), 19, 10)
    assert_one_line_error(run("operons", "predict", ctx / "ctx.zarr", *base, "-c", tmp_path / "wrong.safetensors",
                              "-o", tmp_path / "p.tsv"), "a classifier of 190 features", f"gives {L * H}")
    # a classifier fitted on masked-query maps, applied to plain ones (and back): refused, naming the option
    assert run("operons", "fit", ctx / "ctx.zarr", *base, "--known", known, "-o", tmp_path / "plain.safetensors",
               "-q").exit_code == 0
    assert read_classifier(tmp_path / "plain.safetensors")["attention_queries"] == "plain"
    assert run("contextualize", ctx / "el.zarr", "-e", ctx / "emb.zarr", "-m", ctx / "glm", "-o",
               tmp_path / "masked.zarr", "--attention", "--attention-queries", "masked", "-q").exit_code == 0
    assert_one_line_error(run("operons", "predict", tmp_path / "masked.zarr", *base, "-c",
                              tmp_path / "plain.safetensors", "-o", tmp_path / "p.tsv"),
                          "fitted on plain-query attention", "--attention-queries plain")
    assert run("operons", "fit", tmp_path / "masked.zarr", *base, "--known", known, "-o",
               tmp_path / "masked.safetensors", "-q").exit_code == 0
    assert_one_line_error(run("operons", "predict", ctx / "ctx.zarr", *base, "-c", tmp_path / "masked.safetensors",
                              "-o", tmp_path / "p.tsv"), "fitted on masked-query attention")
    regulondb_like = tmp_path / "ops.txt"
    regulondb_like.write_text("# RegulonDB-like\nabcXY\t1\t100\tforward\t2\tabcX,abcY\t[]\tWeak\n")
    assert_one_line_error(run("operons", "fit", ctx / "ctx.zarr", *base, "--known", regulondb_like, "-o",
                              tmp_path / "c"), "--annotation is needed", status=2)
    broken = tmp_path / "broken.txt"
    broken.write_text("x\ty\tz\n")
    assert_one_line_error(run("operons", "fit", ctx / "ctx.zarr", *base, "--known", broken, "-o", tmp_path / "c"),
                          "neither RegulonDB OperonSet")
    assert not (tmp_path / "c").exists() and not (tmp_path / "p.tsv").exists()


def test_single_gene_contigs_have_no_pairs(tmp_path):
    from conftest import build_store, cds

    single = build_store(tmp_path / "single.zarr", [("c1", 2000, [cds(strand=1)]),
                                                     ("c2", 2000, [cds(strand=1)])])

    class OneGenePerContig:  # what ContextStore offers neighbour_pairs
        path = "ctx.zarr"

        def gene_ids(self):
            return np.array(["c1_1", "c2_1"], object)

        def gene_contigs(self):
            return np.array([0, 1])

        def contig_names(self):
            return np.array(["c1", "c2"], object)

    assert len(neighbour_pairs(OneGenePerContig(), [str(single)])) == 0


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "regulondb_9.3_OperonSet.txt").exists(), reason="needs ../shared/data")
def test_ecoli_regulondb_labels_match_the_operon_set(tmp_path):
    """E. coli K-12 called by glmkit, RefSeq annotation, RegulonDB 9.3: every positive pair's two genes are
    listed together in one multi-gene operon of the file, in the annotation's names."""
    from glmkit.io.operon_sets import read_annotation, read_known_operons
    from glmkit.commands.operons import Pairs, pair_labels

    assert run("call", SHARED_DATA / "ecoli_k12_mg1655.fna.gz", "-o", tmp_path / "el.zarr", "-q").exit_code == 0
    genes = _genes(tmp_path)
    ids = np.array([g[0] for g in genes], object)
    pairs = Pairs(ids, np.arange(len(genes) - 1), np.array(["NC_000913.3"] * (len(genes) - 1), object),
                  np.array(["NC_000913.3"] * len(genes), object), np.array([g[4] for g in genes], np.int8),
                  np.array([g[2] for g in genes]), np.array([g[3] for g in genes]))
    y, report = pair_labels(pairs, str(SHARED_DATA / "regulondb_9.3_OperonSet.txt"),
                            str(SHARED_DATA / "ecoli_k12_mg1655.gff.gz"))
    stop = {(c.strand, c.stop): c for c in read_annotation(str(SHARED_DATA / "ecoli_k12_mg1655.gff.gz"))}
    operons = [set(o) for o in read_known_operons(str(SHARED_DATA / "regulondb_9.3_OperonSet.txt")).operons
               if len(o) > 1]
    checked = 0
    for k in np.flatnonzero(y == 1)[::25]:
        a, b = genes[k], genes[k + 1]
        na = stop[(a[4], a[3] if a[4] > 0 else a[2])].names
        nb = stop[(b[4], b[3] if b[4] > 0 else b[2])].names
        assert any(set(na) & o and set(nb) & o for o in operons)
        checked += 1
    assert checked > 20
    assert 1400 < report["positive"] < 2200 and report["labelled"] > 3500


def test_predict_with_the_classifier_of_an_imported_release(ctx, tmp_path):
    """The published operon_predictor.pkl, through import-glm, is what `operons predict -c MODEL` applies:
    scikit-learn's own predict_proba on the same features."""
    import pickle

    from sklearn.linear_model import LogisticRegression

    store = ContextStore(ctx / "ctx.zarr")
    L, H = store.config["num_layers"], store.config["num_heads"]
    assert run("export-glm", ctx / "glm", "-o", tmp_path / "rel", "-q").exit_code == 0
    rng = np.random.default_rng(0)
    clf = LogisticRegression().fit(rng.normal(size=(80, L * H)) * 0.05, rng.integers(0, 2, 80))
    (tmp_path / "rel" / "operon_predictor.pkl").write_bytes(pickle.dumps(clf))
    assert run("import-glm", tmp_path / "rel" / "glm.bin", "-o", tmp_path / "imported", "-q").exit_code == 0
    r = run("operons", "predict", ctx / "ctx.zarr", "-e", ctx / "el.zarr", "-c", tmp_path / "imported", "-o",
            tmp_path / "p.tsv", "-q")
    assert r.exit_code == 0, r.stderr
    features = attention_features(store, neighbour_pairs(store, [str(ctx / "el.zarr")])).astype(np.float64)
    got = np.array([float(x.split("\t")[5]) for x in (tmp_path / "p.tsv").read_text().splitlines()[1:]])
    np.testing.assert_allclose(got, clf.predict_proba(features)[:, 1], atol=1e-6)
