#!/usr/bin/env python3
"""Benchmark: `glmkit dedup semantic` vs the SemDeDup reference pipeline, and glmkit alone as the corpus grows.

    python bench/dedup.py [--n 200000] [--dim 640] [--clusters 1000] [--scale 100000,1000000,10000000]
                          [--skip-reference] [--threads 2]

Input: embeddings with planted near-duplicates and exact copies around centres
of Zipf-distributed sizes (glmkit.data.synthetic.DuplicateSpec: skewed cluster
sizes, as real corpora have), float16, written chunk by chunk into an
embedding store. No trained model's embeddings of a real corpus can be made
here; the planted copies give a known answer.

(1) One run, same input, each in a child process (time and the kernel's peak
RSS): the reference (bench/semdedup_reference.py: faiss k-means on all items,
a file per cluster, full similarity matrices, pickles), then `glmkit dedup
semantic` with --coarse 0 (one-level k-means, SemDeDup's: the same
centroids, so the keep sets must be identical), then glmkit's default (a
two-level k-means once the sample passes 256 MB: another clustering, so the
keep set may differ slightly; both are SemDeDup's rule on a partition). The
reference reads a float32 .npy of the unit vectors, made beforehand (SemDeDup
normalises when it embeds); that step is not timed.

(2) glmkit alone at each --scale size, --clusters default (one per 1,000
items): peak RSS and time, and how they grow.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import measured  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "dedup"


def corpus(n: int, dim: int) -> Path:
    from glmkit.data.synthetic import DuplicateSpec, write_duplicates

    path = OUT / f"items-{n}x{dim}.zarr"
    if not path.exists():
        spec = DuplicateSpec(n=n, dim=dim, centres=max(10, n // 400), zipf=1.1, near_duplicates=0.15,
                             exact_duplicates=0.05, chunk_rows=4096, seed=1)
        write_duplicates(path.with_name(path.name + ".tmp"), spec)
        path.with_name(path.name + ".tmp").rename(path)
    return path


def unit_vectors_npy(store: Path) -> Path:
    from glmkit.commands.dedup import normalized
    from glmkit.io.dedup import EmbeddingSource

    path = store.with_suffix(".unit.npy")
    if not path.exists():
        source = EmbeddingSource(str(store), "gene")
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(source.n, source.dim))
        for first, _, vectors in source.chunks():
            out[first:first + len(vectors)] = normalized(vectors)
        out.flush()
        del out
    return path


def kept_ids(table: Path, column: str = "keep_0.002") -> set[str]:
    with open(table) as fh:
        header = fh.readline().rstrip("\n").split("\t")
        at = header.index(column)
        return {fields[0] for fields in (line.rstrip("\n").split("\t") for line in fh) if fields[at] == "1"}


def glmkit(store: Path, out: Path, threads: int, *extra) -> tuple[float, float]:
    return measured([sys.executable, "-m", "glmkit", "dedup", "semantic", store, "-o", out, "--level", "gene",
                     "--eps", "2e-3", "--threads", threads, "--force", "-q", *extra])


def compare(args) -> None:
    import zarr

    store = corpus(args.n, args.dim)
    hashes = zarr.open_group(str(store), mode="r")["hash"][:].astype(object)
    rows = []
    if not args.skip_reference:
        npy = unit_vectors_npy(store)
        ref_out = OUT / f"reference-{args.n}"
        mb, s = measured([sys.executable, ROOT / "bench" / "semdedup_reference.py", npy, ref_out, args.clusters,
                          "2e-3", "0"])
        reference = {hashes[int(i)] for i in (ref_out / "keep.txt").read_text().split()}
        rows.append(("SemDeDup reference pipeline", s, mb, reference))
    tables = []
    for label, extra in (("glmkit dedup semantic --coarse 0", ("--coarse", "0")),
                         ("glmkit dedup semantic (default)", ())):
        out = OUT / f"glmkit-{args.n}-{'flat' if extra else 'default'}"
        mb, s = glmkit(store, out, args.threads, "-k", args.clusters, *extra)
        rows.append((label, s, mb, kept_ids(out / "dedup.tsv")))
        tables.append(out / "dedup.tsv")
    print(f"\n{args.n:,} items x {args.dim} (float16), {args.clusters:,} clusters, eps 2e-3, "
          f"{args.threads} threads")
    print(f"{'':<36}{'seconds':>9}{'peak RSS MB':>13}{'pruned':>9}")
    for label, s, mb, kept in rows:
        print(f"{label:<36}{s:>9.1f}{mb:>13,.0f}{1 - len(kept) / args.n:>9.1%}")
    if not args.skip_reference:
        reference = rows[0][3]
        content = _contents(store, hashes)
        for (label, s, mb, kept), table in zip(rows[1:], tables):
            differ = {h for h in reference ^ kept}
            by_content = Counter(content[h] for h in reference) - Counter(content[h] for h in kept)
            by_content += Counter(content[h] for h in kept) - Counter(content[h] for h in reference)
            left = [h for h in differ if by_content[content[h]]]
            ties = _rounding_swaps(left, table)
            print(f"{label}: speed {rows[0][1] / s:.2f}x, memory {mb / rows[0][2]:.2f} of the reference's; "
                  f"keep sets differ in {len(differ):,} items: {len(differ) - len(left):,} exact copies (the same "
                  f"vector under two ids, either kept), {ties:,} swaps within near-duplicate pairs whose similarities "
                  f"to the centroid agree within 2e-6 (float rounding orders them), {len(left) - ties:,} other")


def _rounding_swaps(items: list[str], table: Path) -> int:
    """How many of ``items`` have a partner among them in the same cluster whose centroid similarity is within
    2e-6 of theirs."""
    wanted = set(items)
    found = {}
    with open(table) as fh:
        fh.readline()
        for line in fh:
            fields = line.split("\t", 3)
            if fields[0] in wanted:
                found[fields[0]] = (fields[1], float(fields[2]))
    by_cluster: dict[str, list[float]] = {}
    for cluster, similarity in found.values():
        by_cluster.setdefault(cluster, []).append(similarity)
    return sum(1 for cluster, similarity in found.values()
               if sum(abs(similarity - other) <= 2e-6 for other in by_cluster[cluster]) >= 2)


def _contents(store: Path, hashes) -> dict:
    """Each id's vector bytes: exact copies share them."""
    from glmkit.io.dedup import EmbeddingSource

    content = {}
    for first, _, vectors in EmbeddingSource(str(store), "gene").chunks():
        for i, v in enumerate(vectors):
            content[hashes[first + i]] = v.tobytes()
    return content


def scale(args) -> None:
    sizes = [int(float(x)) for x in args.scale.split(",")]
    results = []
    for n in sizes:
        store = corpus(n, args.dim)
        mb, s = glmkit(store, OUT / f"scale-{n}", args.threads)
        results.append((n, mb, s))
        print(f"scale: {n:,} items: {s:.1f} s, peak RSS {mb:,.0f} MB", flush=True)
    n0, mb0, s0 = results[0]
    print(f"\nglmkit dedup semantic alone, {args.dim}-dim float16, clusters = items / 1,000, {args.threads} threads")
    print(f"{'items':>12}{'seconds':>10}{'peak RSS MB':>13}{'RSS / smallest':>16}{'time / smallest':>17}"
          f"{'n log n / smallest':>20}")
    for n, mb, s in results:
        print(f"{n:>12,}{s:>10.1f}{mb:>13,.0f}{mb / mb0:>16.2f}{s / s0:>17.1f}"
              f"{n * math.log(n) / (n0 * math.log(n0)):>20.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=640)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--scale", default="")
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--skip-comparison", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if not args.skip_comparison:
        compare(args)
    if args.scale:
        scale(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
