"""`glmkit dedup semantic`: SemDeDup (Abbas et al. 2023) at corpus scale, as the OMG corpus was balanced.

Embeddings are L2-normalised; spherical k-means is fitted on a sample (faiss);
every item is assigned to its nearest centroid in one streaming pass; then, in
each cluster, items are put in the keep order (``hard``: farthest from the
centroid first, SemDeDup's default; ``easy``: nearest first; ``random``) and
each item's maximum cosine similarity to the items before it is found. An item
is pruned at threshold eps when that similarity exceeds 1 - eps: SemDeDup's
rule (the upper triangle of the cluster's similarity matrix, column maxima,
floored at 0), so that one pass serves every threshold.

What makes it scale: the fit reads only its sample; the assignment streams the
input chunk by chunk into buckets of clusters on disk (raw files, input dtype);
the pruning reads one bucket at a time and computes similarities in blocks of
at most ``block`` x ``block``, so no cluster's similarity matrix is ever held.
Memory is bounded by the sample, the centroids, one bucket's ids and two
blocks, whatever the number of items. Each step can run as N shares
(``assign``: contiguous row ranges; ``prune``: contiguous bucket ranges) and
``merge`` concatenates them: the result is byte for byte the single run's.

Work: fit O(sample * clusters * d * iterations), assignment O(n * clusters * d),
pruning O(n * mean cluster size * d).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import zlib
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np

from glmkit.errors import GlmkitError, GlmkitUsageError
from glmkit.io.dedup import (HISTOGRAM_EDGES, ASSIGN_FORMAT, PRUNE_FORMAT, AssignShareWriter, BucketReader,
                             Centroids, EmbeddingSource, read_centroids, share_range, shares_in_order, write_centroids,
                             check_crc, write_prune_manifest)
from glmkit.io.files import atomic_outputs, claim_outputs, planned_work_folder, remove
from glmkit.log import plural, progress
from glmkit.resources import one_blas_thread, ordered_map, release_freed_memory
from glmkit.provenance import provenance
from glmkit.options import ProteinOptions, SemanticOptions

log = logging.getLogger("glmkit")

ITEMS_PER_CLUSTER = 1000     # default --clusters: one per this many items
ITEMS_PER_BUCKET = 10_000    # default --buckets: the unit of pruning work and of its memory (~140 MB at 640 dims)
BUCKET_READ_BYTES = 64 << 20  # a bucket's vectors up to this size are read whole, in one pass, for its pruning
GRANULE = 1024               # rows per block of the assignment; shares start at its multiples
FLAT_SAMPLE_BYTES = 256 << 20   # a larger sample (float32) makes the default k-means two-level (see fit)
CELL_SAMPLE_BYTES = 32 << 20    # the most sample a cell's k-means holds (float32); the coarse k-means holds half
SPREAD_CHUNKS = 256             # a sample of a large store is drawn from at least this many of its chunks
FAISS_MIN_POINTS = 39           # faiss's own floor of sample points per centroid


@contextlib.contextmanager
def faiss_threads(n: int):
    faiss = _faiss()
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(max(1, n))
    try:
        yield faiss
    finally:
        faiss.omp_set_num_threads(before)


def _faiss():
    try:
        import faiss
    except ImportError:
        raise GlmkitError("dedup semantic needs faiss: pip install faiss-cpu (or faiss-gpu on a GPU node)") from None
    return faiss


def normalized(vectors: np.ndarray, ids: Sequence[str] | None = None, where: str = "") -> np.ndarray:
    """Rows scaled to unit length in float32 (the same arithmetic in every step, so that steps agree bit for bit)."""
    x = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    bad = ~np.isfinite(norms[:, 0]) | (norms[:, 0] == 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        what = f"item {ids[i]}" if ids is not None else f"row {i}"
        raise GlmkitError(f"{where}: {what} has a zero or non-finite embedding; it cannot be compared")
    return x / norms


def eps_column(eps: float) -> str:
    return f"keep_{eps:g}"


# -- fit ----------------------------------------------------------------------------------------------------------

def clusters_for(source: EmbeddingSource, options: SemanticOptions) -> int:
    k = options.clusters or max(1, round(source.n / ITEMS_PER_CLUSTER))
    if k > source.n:
        raise GlmkitUsageError(f"--clusters {k} exceeds the {source.n:,} items of {source.path}")
    return k


def fit(source: EmbeddingSource, options: SemanticOptions, scratch: Path) -> Centroids:
    """Spherical k-means centroids on a sample of ``clusters * sample`` items (all items if fewer).

    One level (SemDeDup's): faiss's k-means on the whole sample. Two levels (``coarse`` cells; the default
    once a one-level sample would exceed FLAT_SAMPLE_BYTES, with sqrt(clusters) cells): coarse centroids on a
    sample of ``coarse * sample`` items; the main sample streamed into per-cell files under ``scratch`` by
    nearest coarse centroid; then each cell's own k-means with a share of the clusters proportional to its
    sample (at least one), on at most CELL_SAMPLE_BYTES of its items. Memory: the coarse sample and one
    cell's, whatever the size of the input; work: sample x (coarse + clusters per cell) instead of sample x
    clusters.
    """
    k = clusters_for(source, options)
    m = min(source.n, k * options.sample)
    coarse = options.coarse
    if coarse is None:
        coarse = 0 if m * source.dim * 4 <= FLAT_SAMPLE_BYTES else round(math.sqrt(k))
    coarse = min(coarse, k)
    cell_rows = max(1, CELL_SAMPLE_BYTES // (source.dim * 4))
    if coarse:   # no point sampling more than the cells can use
        m = min(m, coarse * cell_rows * 3 // 2)
    rng = np.random.default_rng(options.seed)
    plan = {"input": source.record(), "n": source.n, "dim": source.dim, "level": options.level, "clusters": k,
            "coarse": coarse, "sample": m, "seed": options.seed, "iterations": options.iterations,
            "buckets": min(k, options.buckets or max(16, math.ceil(source.n / ITEMS_PER_BUCKET)))}
    if not coarse:
        log.info(f"dedup: fitting {plural(k, 'centroid')} on {plural(m, 'item')} of {source.n:,}")
        centroids = _kmeans(_unit_sample(source, _sample_stored_rows(source.n, m, source.chunk, rng)), k, options)
        return Centroids("", centroids, plan, "")
    m1 = min(source.n, coarse * options.sample, max(coarse, cell_rows // 2))
    log.info(f"dedup: fitting {plural(coarse, 'coarse centroid')} on {plural(m1, 'item')}, then "
             f"{plural(k, 'centroid')} within them on {plural(m, 'item')} of {source.n:,}")
    top = _kmeans(_unit_sample(source, _sample_stored_rows(source.n, m1, source.chunk, rng)), coarse, options)
    top_t = np.ascontiguousarray(top.T)
    counts = np.zeros(coarse, dtype=np.int64)
    scratch.mkdir(parents=True, exist_ok=True)
    with one_blas_thread():   # (the cells' files hold the input's values, in its dtype: half the disk for float16)
        for _, vectors in source.iter_rows(_sample_stored_rows(source.n, m, source.chunk, rng)):
            cell = (normalized(vectors, where=source.path) @ top_t).argmax(axis=1)
            for c in np.unique(cell):
                with open(scratch / f"cell{c}", "ab") as fh:
                    fh.write(np.ascontiguousarray(vectors[cell == c]).tobytes())
            counts += np.bincount(cell, minlength=coarse)
    per_cell = _share_clusters(counts, k)
    parts, offsets, thin = [], [0], []
    for c in range(coarse):
        if per_cell[c]:
            x = _cell_sample(scratch / f"cell{c}", source, cell_rows, rng)
            parts.append(_kmeans(normalized(x), int(per_cell[c]), options))
            if len(x) < FAISS_MIN_POINTS * per_cell[c]:
                thin.append(len(x) / per_cell[c])
            del x
            (scratch / f"cell{c}").unlink()
        offsets.append(offsets[-1] + int(per_cell[c]))
    if thin:
        log.warning(f"dedup: {len(thin)} of {coarse} cells fitted on fewer than {FAISS_MIN_POINTS} sample items "
                    f"a centroid (as few as {min(thin):.0f}; a cell's sample holds at most {cell_rows:,} items): "
                    f"their clusters are fitted more coarsely; the pruning rule within each cluster is unchanged")
    plan["clusters"] = offsets[-1]
    return Centroids("", np.vstack(parts), plan, "", top, np.asarray(offsets, dtype=np.int64))


def _cell_sample(path: Path, source: EmbeddingSource, most: int, rng: np.random.Generator) -> np.ndarray:
    """At most ``most`` random rows of a cell's file, read row by row: a memory map's fancy index would map the
    pages of the whole file into the process (counted in its RSS, and the largest cell grows with the input)."""
    row_bytes = source.dim * np.dtype(source.dtype).itemsize
    n = path.stat().st_size // row_bytes
    rows = np.arange(n) if n <= most else np.sort(rng.choice(n, most, replace=False))
    out = np.empty((len(rows), source.dim), dtype=source.dtype)
    with open(path, "rb") as fh:
        for i, row in enumerate(rows.tolist()):
            fh.seek(row * row_bytes)
            fh.readinto(memoryview(out[i]).cast("B"))
    return out


def _unit_sample(source: EmbeddingSource, rows: np.ndarray) -> np.ndarray:
    """Unit vectors of the given rows, normalised chunk by chunk into one float32 array (no copy in the input's
    dtype alongside)."""
    x = np.empty((len(rows), source.dim), dtype=np.float32)
    for at, vectors in source.iter_rows(rows):
        x[at] = normalized(vectors, where=source.path)
    return x


def _sample_stored_rows(n: int, m: int, chunk: int, rng: np.random.Generator) -> np.ndarray:
    """``m`` distinct rows of a store of ``n`` rows in chunks of ``chunk``, sorted, for a sample to be read.

    A uniform sample of a large store touches nearly every chunk (2 million of 10^7 rows in chunks of 4,096: all
    of them), so reading it costs as much as reading the store. When the sample would need fewer than half the
    chunks, it is drawn uniformly from a random set of chunks instead, twice as many as it fills and at least
    SPREAD_CHUNKS, spread over the whole store; smaller stores keep the uniform draw (and the same rows as
    before)."""
    n_chunks = -(-n // chunk)
    c = max(SPREAD_CHUNKS, 2 * -(-m // chunk))
    if m >= n or c >= n_chunks:
        return _sample_rows(n, m, rng)
    chosen = np.sort(rng.choice(n_chunks, c, replace=False))
    sizes = np.minimum(chunk, n - chosen * chunk)                    # the store's last chunk may be short
    before = np.concatenate([[0], np.cumsum(sizes)])
    picks = _sample_rows(int(before[-1]), m, rng)                    # positions in the chosen chunks, together
    k = np.searchsorted(before, picks, side="right") - 1
    return chosen[k] * chunk + (picks - before[k])


def _sample_rows(n: int, m: int, rng: np.random.Generator, block: int = 1 << 20) -> np.ndarray:
    """``m`` distinct rows of ``n``, sorted, uniformly at random: block by block, how many from each block drawn
    from the hypergeometric law, so that memory is the sample's and a block's (a permutation of all n rows, as
    numpy's choice makes, would be 8 bytes per row of the input)."""
    if m >= n:
        return np.arange(n)
    parts, left = [], m
    for lo in range(0, n, block):
        size = min(block, n - lo)
        rest = n - lo
        take = left if size == rest else int(rng.hypergeometric(size, rest - size, left)) if left else 0
        parts.append(lo + np.sort(rng.choice(size, take, replace=False)))
        left -= take
    return np.concatenate(parts)


def _share_clusters(counts: np.ndarray, k: int) -> np.ndarray:
    """Clusters per cell: one for every cell with sample items, the rest in proportion to the items (largest
    remainders), never more than a cell's items."""
    share = (counts > 0).astype(np.int64)
    rest = k - share.sum()
    if rest > 0 and counts.sum():
        exact = rest * counts / counts.sum()
        share += np.floor(exact).astype(np.int64)
        left = k - share.sum()
        share[np.argsort(-(exact - np.floor(exact)), kind="stable")[:left]] += 1
    return np.minimum(share, counts)


def _kmeans(x: np.ndarray, k: int, options: SemanticOptions) -> np.ndarray:
    with faiss_threads(options.threads) as faiss:
        gpu = getattr(faiss, "get_num_gpus", lambda: 0)() > 0   # faiss-gpu installed and a GPU visible
        # min_points_per_centroid only decides whether faiss prints a warning (one per thin cell, hundreds at
        # 10^7 items): fit() reports thin samples itself, in one line
        kmeans = faiss.Kmeans(x.shape[1], k, niter=options.iterations, seed=options.seed, spherical=True,
                              max_points_per_centroid=max(1, math.ceil(len(x) / k)),
                              min_points_per_centroid=min(FAISS_MIN_POINTS, max(1, len(x) // k)), verbose=False,
                              gpu=gpu)
        kmeans.train(np.ascontiguousarray(x))
    return np.ascontiguousarray(kmeans.centroids, dtype=np.float32)


# -- assign -------------------------------------------------------------------------------------------------------

def assign(source: EmbeddingSource, centroids_path: str, folder: Path, shard: tuple[int, int] | None,
           threads: int) -> dict:
    """Nearest centroid of every item of the share, written into the share's bucket files."""
    c = read_centroids(centroids_path)
    if c.plan["input"]["sha256"] != source.record()["sha256"] or c.plan["n"] != source.n:
        raise GlmkitError(f"{centroids_path} was fitted on another input than {source.path}")
    start, stop = share_range(source.n, shard, GRANULE)

    def blocks():   # rows cut at multiples of GRANULE: each row is computed in the same block whatever the shares
        for first, ids, vectors in source.chunks(start, stop):
            cuts = [0, *range(-first % GRANULE or GRANULE, len(ids), GRANULE), len(ids)]
            for lo, hi in zip(cuts, cuts[1:]):
                if hi > lo:
                    yield first + lo, ids[lo:hi], vectors[lo:hi]

    nearest_centroid = NearestCentroid(c)
    c.centroids = c.coarse = None   # held transposed by nearest_centroid: not twice

    def nearest(block):
        first, ids, vectors = block
        return first, ids, vectors, nearest_centroid(normalized(vectors, ids, source.path))

    writer = AssignShareWriter(folder, c.plan["buckets"], source.dim, source.dtype)
    with one_blas_thread(), progress(total=stop - start, desc="dedup assign", unit="items") as bar:
        for first, ids, vectors, label in ordered_map(nearest, blocks(), threads):
            writer.add(np.arange(first, first + len(ids)), label, vectors, ids)
            bar.update(len(ids))
    writer.close({"shard": list(shard or (1, 1)), "rows": [start, stop],
                  "plan": {**c.plan, "centroids": c.checksum}})
    return {"items": stop - start}


class NearestCentroid:
    """The nearest centroid of unit vectors: among all (one level), or within the nearest coarse cell (two)."""

    def __init__(self, c: Centroids):
        self.centroids_t = np.ascontiguousarray(c.centroids.T)
        self.coarse_t = None if c.coarse is None else np.ascontiguousarray(c.coarse.T)
        self.offsets = c.cell_offsets

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.coarse_t is None:
            return (x @ self.centroids_t).argmax(axis=1).astype(np.int32)
        cell = (x @ self.coarse_t).argmax(axis=1)
        label = np.empty(len(x), dtype=np.int32)
        for c in np.unique(cell):
            at = np.flatnonzero(cell == c)
            lo, hi = self.offsets[c], self.offsets[c + 1]
            label[at] = lo + (x[at] @ self.centroids_t[:, lo:hi]).argmax(axis=1)
        return label


# -- prune --------------------------------------------------------------------------------------------------------

def keep_order(similarity_to_centroid: np.ndarray, order: str, seed: int, cluster: int) -> np.ndarray:
    """Positions of a cluster's items in keep order. Ties keep input order (Python's stable sort, as SemDeDup's)."""
    distance = np.float32(1) - similarity_to_centroid
    if order == "hard":
        return np.argsort(-distance, kind="stable")
    if order == "easy":
        return np.argsort(distance, kind="stable")
    return np.random.default_rng([seed, cluster]).permutation(len(distance))


@functools.lru_cache(maxsize=4)
def _not_earlier(block: int) -> np.ndarray:
    """(block, block) bool, True where column i >= row j: a diagonal block's top-left square is its own mask."""
    return ~np.tri(block, block, -1, dtype=bool)


def max_similarity_to_earlier(rows_of, m: int, block: int) -> tuple[np.ndarray, np.ndarray]:
    """For items 0..m-1 (unit vectors; ``rows_of(lo, hi)`` gives items lo:hi): each item's largest cosine similarity
    to an item before it, floored at 0, and that item's position (-1 where the floor holds). The upper triangle of
    the similarity matrix, computed block by block."""
    block = max(1, min(block, m))   # never larger than the cluster: a --block of 10^7 must not allocate 10^14
    best = np.zeros(m, dtype=np.float32)
    arg = np.full(m, -1, dtype=np.int64)
    for j0 in range(0, m, block):
        j1 = min(m, j0 + block)
        xj = rows_of(j0, j1)
        for i0 in range(0, j1, block):
            i1 = min(m, i0 + block)
            # (rows j, columns i): each item's maximum along its own row, a contiguous reduction (along columns
            # it took ~10x as long); xj @ xj.T is numpy's symmetric product on the diagonal
            s = xj @ (xj if i0 == j0 else rows_of(i0, i1)).T
            if i0 == j0:   # only earlier items, i < j (a boolean mask: index arrays would be 4x a block)
                s[_not_earlier(block)[:len(xj), :len(xj)]] = -np.inf
            top = s.argmax(axis=1)
            value = s[np.arange(j1 - j0), top]
            better = value > best[j0:j1]                   # strict: the earliest of equal maxima wins
            best[j0:j1][better] = value[better]
            arg[j0:j1][better] = i0 + top[better]
    return best, arg


def prune_bucket(reader: BucketReader, centroids: np.ndarray, options: SemanticOptions):
    """Per cluster of one bucket, in cluster order: the final table's rows (in keep order) and the items' maximum
    similarities to earlier items. Clusters are computed on ``options.threads`` threads."""
    clusters = reader.column("cluster")
    ids = reader.ids()
    order = np.argsort(clusters, kind="stable")
    groups = np.split(order, np.flatnonzero(np.diff(clusters[order])) + 1) if len(order) else []
    prune_one = functools.partial(prune_cluster, reader, ids, clusters, centroids, options)
    yield from ordered_map(prune_one, groups, options.threads)


def prune_cluster(reader: BucketReader, ids: np.ndarray, clusters: np.ndarray, centroids: np.ndarray,
                  options: SemanticOptions, members: np.ndarray) -> tuple[list[str], np.ndarray]:
    cluster = int(clusters[members[0]])
    centroid = centroids[cluster]
    if len(members) <= options.block:   # the usual case: the cluster's vectors in memory
        x = normalized(reader.vectors(members))
        to_centroid = x @ centroid
        rank = keep_order(to_centroid, options.keep_order, options.seed, cluster)
        xs = x[rank]
        rows_of = lambda lo, hi: xs[lo:hi]  # noqa: E731
    else:                               # a large cluster: its vectors stay on disk, read block by block
        to_centroid = np.concatenate([normalized(reader.vectors(members[lo:lo + options.block])) @ centroid
                                      for lo in range(0, len(members), options.block)])
        rank = keep_order(to_centroid, options.keep_order, options.seed, cluster)
        rows_of = lambda lo, hi: normalized(reader.vectors(members[rank[lo:hi]]))  # noqa: E731
    ranked = members[rank]
    best, arg = max_similarity_to_earlier(rows_of, len(ranked), options.block)
    sims = to_centroid[rank]
    # the keep/drop columns of an item as one of 2^thresholds strings; Python floats (exact copies of the
    # float32 values, formatted alike) and strings: numpy scalars formatted one by one cost 4x as much
    code = np.zeros(len(ranked), dtype=np.int64)
    for eps in options.eps:
        code = 2 * code + (best <= np.float32(1 - eps))
    flags = ["\t".join(format(c, f"0{len(options.eps)}b")) for c in range(1 << len(options.eps))]
    duplicates = np.where(arg >= 0, ids[ranked[arg]], "").tolist()
    lines = [f"{item}\t{cluster}\t{sim:.6f}\t{value:.7g}\t{duplicate}\t{flags[k]}\n" for item, sim, value, duplicate, k
             in zip(ids[ranked].tolist(), sims.tolist(), best.tolist(), duplicates, code.tolist())]
    return lines, best


def prune(assign_folders: Sequence[str], centroids_path: str, folder: Path, options: SemanticOptions) -> dict:
    """The table rows, pruned counts and histogram of the share's buckets, written into ``folder``."""
    shares = shares_in_order(assign_folders, ASSIGN_FORMAT, "assignment")
    c = read_centroids(centroids_path)
    plan = shares[0][1]["plan"]
    if plan.get("centroids") != c.checksum:
        raise GlmkitError(f"the assignment shares were made with other centroids than {centroids_path}")
    buckets = int(plan["buckets"])
    lo, hi = share_range(buckets, options.shard)
    items = sum(int(m["counts"][b]) for _, m in shares for b in range(lo, hi))
    pruned = np.zeros(len(options.eps), dtype=np.int64)
    histogram = np.zeros(len(HISTOGRAM_EDGES) - 1, dtype=np.int64)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "rows.tsv", "w") as out, one_blas_thread(), \
            progress(total=items, desc="dedup prune", unit="items") as bar:
        for b in range(lo, hi):
            reader = BucketReader(shares, b)
            if not reader.size:
                continue
            reader.load_vectors(BUCKET_READ_BYTES)
            for lines, maxima in prune_bucket(reader, c.centroids, options):
                out.writelines(lines)
                pruned += [(maxima > np.float32(1 - eps)).sum() for eps in options.eps]
                histogram += np.histogram(np.clip(1.0 - maxima.astype(np.float64), 0, None), HISTOGRAM_EDGES)[0]
                bar.update(len(lines))
            release_freed_memory()
    write_prune_manifest(folder, {"shard": list(options.shard or (1, 1)), "buckets": [lo, hi], "items": items,
                                  "pruned": pruned.tolist(), "histogram": histogram.tolist(),
                                  "plan": {**plan, "keep_order": options.keep_order, "seed_order": options.seed,
                                           "eps": list(options.eps)}})
    return {"items": items, "pruned": pruned.tolist()}


# -- merge --------------------------------------------------------------------------------------------------------

COLUMNS = ("id", "cluster", "centroid_similarity", "max_similarity", "duplicate_of")


def merge(prune_folders: Sequence[str], table: Path, summary: Path, png: Path | None) -> dict:
    """The final table (shares' rows in order under one header), the pruned fraction per threshold, the curve."""
    shares = shares_in_order(prune_folders, PRUNE_FORMAT, "prune")
    plan = shares[0][1]["plan"]
    eps = plan["eps"]
    items = sum(m["items"] for _, m in shares)
    if items != plan["n"]:
        raise GlmkitError(f"the prune shares hold {items:,} items, the input {plan['n']:,}")
    pruned = np.sum([m["pruned"] for _, m in shares], axis=0)
    histogram = np.sum([m["histogram"] for _, m in shares], axis=0)
    with open(table, "wb") as out:
        out.write(("\t".join([*COLUMNS, *map(eps_column, eps)]) + "\n").encode())
        for folder, manifest in shares:   # copied in pieces, checked against the share's crc32 at its end
            crc = 0
            with open(folder / "rows.tsv", "rb") as rows:
                for block in iter(lambda: rows.read(1 << 20), b""):
                    crc = zlib.crc32(block, crc)
                    out.write(block)
            check_crc(folder / "rows.tsv", crc, manifest)
    rows = [(e, items, items - int(p), int(p), round(int(p) / items, 6)) for e, p in zip(eps, pruned)]
    with open(summary, "w") as out:
        out.write("eps\titems\tkept\tpruned\tpruned_fraction\n")
        out.writelines(f"{e:g}\t{n}\t{k}\t{p}\t{f}\n" for e, n, k, p, f in rows)
    if png:
        _plot_remaining(png, histogram, items, eps, pruned)
    for e, _, k, p, f in rows:
        log.info(f"dedup: eps {e:g}: pruned {p:,} of {items:,} ({100 * f:.1f} %), kept {k:,}")
    return {"items": items, "pruned": dict(zip(map(float, eps), map(int, pruned)))}


def remaining_curve(histogram: np.ndarray, items: int) -> tuple[np.ndarray, np.ndarray]:
    """(threshold, fraction kept) at the histogram's inner bin edges: an item is kept at eps when
    1 - max similarity >= eps."""
    kept_from = np.cumsum(np.asarray(histogram)[::-1])[::-1]   # items at or above each bin's left edge
    return HISTOGRAM_EDGES[1:-1], kept_from[1:] / items


def _plot_remaining(path: Path, histogram, items: int, eps: Sequence[float], pruned) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y = remaining_curve(histogram, items)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.semilogx(x, y, color="tab:blue")
    ax.scatter(eps, [1 - p / items for p in pruned], color="tab:red", zorder=3, label="thresholds asked for")
    ax.set_xlabel("threshold eps (pruned when max similarity > 1 - eps)")
    ax.set_ylabel("fraction of items kept")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"SemDeDup: {items:,} items")
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=120)
    plt.close(fig)


# -- the commands ----------------------------------------------------------------------------------------------

def _publish_folder(build, final: Path) -> None:
    """Build a step's folder under a temporary name, then rename it into place (a crash leaves no half step)."""
    tmp = final.with_name(f".{final.name}.tmp")
    remove(tmp)
    build(tmp)
    os.replace(tmp, final)


def run_fit(input_path: str, output: str, options: SemanticOptions, force: bool = False) -> dict:
    source = EmbeddingSource(input_path, options.level)
    with atomic_outputs([output], force, [input_path]) as (tmp,):
        scratch = tmp.with_name(tmp.name + ".scratch")
        try:
            fitted = fit(source, options, scratch)
        finally:
            remove(scratch)
        write_centroids(tmp, fitted, _parameters(options), [source.record()])
    return fitted.plan


def run_assign(input_path: str, centroids: str, output: str, options: SemanticOptions, force: bool = False) -> dict:
    source = EmbeddingSource(input_path, options.level)
    with atomic_outputs([output], force, [input_path, centroids]) as (tmp,):
        return assign(source, centroids, Path(tmp), options.shard, options.threads)


def run_prune(assign_folders: Sequence[str], centroids: str, output: str, options: SemanticOptions,
              force: bool = False) -> dict:
    with atomic_outputs([output], force, [*assign_folders, centroids]) as (tmp,):
        return prune(assign_folders, centroids, Path(tmp), options)


def run_merge(prune_folders: Sequence[str], output: str, force: bool = False) -> dict:
    with atomic_outputs([output], force, list(prune_folders)) as (tmp,):
        return _merge_into(prune_folders, Path(tmp))


def _merge_into(prune_folders: Sequence[str], folder: Path) -> dict:
    folder.mkdir(parents=True)
    return merge(prune_folders, folder / "dedup.tsv", folder / "summary.tsv", folder / "remaining.png")


def run_semantic(input_path: str, output: str, options: SemanticOptions, force: bool = False) -> dict:
    """Fit, assign, prune and merge in one process; a killed run resumes from the last finished step."""
    source = EmbeddingSource(input_path, options.level)
    clusters_for(source, options)   # refused before any work
    with claim_outputs([output], force, [input_path]):
        plan_text = json.dumps({"input": source.record(), **_parameters(options)}, sort_keys=True)
        work, resumed = planned_work_folder(output, plan_text)
        if resumed:
            log.info(f"dedup: resuming from {work}")
        centroids, assigned, pruned = work / "centroids.zarr", work / "assign", work / "prune"
        if not centroids.exists():
            _publish_folder(lambda tmp: write_centroids(tmp, fit(source, options, work / "scratch"),
                                                        _parameters(options), [source.record()]), centroids)
            remove(work / "scratch")
            release_freed_memory()
        if not assigned.exists():
            _publish_folder(lambda tmp: assign(source, str(centroids), tmp, None, options.threads), assigned)
            release_freed_memory()
        if not pruned.exists():
            _publish_folder(lambda tmp: prune([str(assigned)], str(centroids), tmp, options), pruned)
        with atomic_outputs([output], force, [input_path]) as (tmp,):
            result = _merge_into([str(pruned)], Path(tmp))
        remove(work)
    return result


def _parameters(options: SemanticOptions) -> dict:
    return {k: v for k, v in asdict(options).items() if k not in ("threads", "shard")}


# -- dedup proteins: MMseqs2 linclust ---------------------------------------------------------------------------



def _protein_records(inputs: Sequence[str]):
    """(id, sequence) of every protein of FASTA files and element stores (their CDS), ids checked unique."""
    from glmkit.io.proteins import proteins_of_store
    from glmkit.io.fasta import read_fasta
    from glmkit.io.files import InputFile
    from glmkit.io.store import store_schema

    seen: dict[str, str] = {}
    for path in inputs:
        if path != "-" and Path(path).is_dir():
            if store_schema(path) != "glmkit.elements":
                raise GlmkitError(f"{path}: not an element store or a protein FASTA file")
            records = proteins_of_store(path)
        else:
            records = ((r.name, r.sequence) for r in read_fasta(InputFile(path), "any-protein"))
        for name, sequence in records:
            if name in seen:
                raise GlmkitError(f"{path}: duplicate protein id '{name}' (first seen in {seen[name]})")
            seen[name] = path
            yield name, sequence


def run_proteins(inputs: Sequence[str], output: str, options: ProteinOptions, force: bool = False) -> dict:
    """Cluster proteins with MMseqs2 linclust: clusters.tsv (representative, member; MMseqs2's own layout) and
    representatives.faa in the folder ``output``."""
    from glmkit.genome.mmseqs import easy_linclust, find_mmseqs

    mmseqs = find_mmseqs()   # before any work
    steps, drop_singletons = options.steps()
    threads = 1 if options.deterministic else options.threads
    with claim_outputs([output], force, list(inputs)):
        work, _ = planned_work_folder(output, json.dumps([list(inputs), asdict(options)]))  # never reused: rerun
        tmpdir = Path(options.tmpdir) / f"glmkit-{os.getpid()}" if options.tmpdir else work / "tmp"
        fasta = work / "proteins.faa"
        n = 0
        try:
            with open(fasta, "wb") as fh:
                for name, sequence in _protein_records(inputs):
                    fh.write(b">" + name.encode() + b"\n" + sequence + b"\n")
                    n += 1
        except GlmkitError:   # bad input: leave nothing behind (an MMseqs2 failure keeps its log there)
            remove(work)
            raise
        log.info(f"dedup proteins: {plural(n, 'protein')}; {len(steps)} linclust step(s) with {plural(threads, 'thread')}")
        stage_input, maps = fasta, []
        for i, (identity, coverage, cov_mode) in enumerate(steps, 1):
            clusters, representatives = easy_linclust(mmseqs, stage_input, work / f"step{i}", tmpdir, identity,
                                                      coverage, cov_mode, threads)
            maps.append(clusters)
            stage_input = representatives
        with atomic_outputs([output], force) as (tmp,):
            tmp.mkdir()
            result = _write_protein_clusters(maps, stage_input, tmp, drop_singletons)
            (tmp / "provenance.json").write_text(json.dumps(
                provenance(asdict(options), inputs=[str(Path(p).absolute()) if p != "-" else p for p in inputs],
                           mmseqs=mmseqs.record()), indent=2) + "\n")
        remove(work)
        if options.tmpdir:
            remove(tmpdir)
    log.info(f"dedup proteins: {result['members']:,} proteins in {result['clusters']:,} clusters"
             + (f"; {result['singletons_dropped']:,} singletons dropped" if drop_singletons else ""))
    return {"proteins": n, **result}


def _write_protein_clusters(maps: Sequence[Path], representatives: Path, folder: Path, drop_singletons: bool) -> dict:
    """Compose the steps' clusterings (member -> step-1 representative -> ... -> final one) into clusters.tsv."""
    from glmkit.genome.mmseqs import read_clusters

    final = {}   # representative of each step's input -> the final representative (held for the last steps only)
    for path in reversed(maps[1:]):
        step = read_clusters(path)
        final = {member: final.get(rep, rep) for member, rep in step.items()} if final else step
    sizes: dict[str, int] = {}   # final representative -> members
    with open(maps[0]) as fh:
        for line in fh:
            rep = line.split("\t", 1)[0]
            top = final.get(rep, rep)
            sizes[top] = sizes.get(top, 0) + 1
    kept = {rep for rep, size in sizes.items() if size > 1 or not drop_singletons}
    members = 0
    with open(maps[0]) as fh, open(folder / "clusters.tsv", "w") as out:
        for line in fh:
            rep, member = line.rstrip("\n").split("\t")
            top = final.get(rep, rep)
            if top in kept:
                out.write(f"{top}\t{member}\n")
                members += 1
    with open(representatives) as fh, open(folder / "representatives.faa", "w") as out:
        write = False
        for line in fh:
            if line.startswith(">"):   # MMseqs2 writes ">name " (a trailing space): write the name alone
                name = line[1:].split()[0]
                write = name in kept
                line = f">{name}\n"
            if write:
                out.write(line)
    return {"clusters": len(kept), "members": members, "singletons_dropped": len(sizes) - len(kept)}
