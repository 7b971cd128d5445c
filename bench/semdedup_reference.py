#!/usr/bin/env python3
"""The SemDeDup reference pipeline (facebookresearch/SemDeDup, Abbas et al. 2023), transcribed for the benchmark.

    python bench/semdedup_reference.py EMBEDDINGS.npy OUTDIR CLUSTERS EPS [SEED]

Written here from the published pipeline's steps, not copied: the embeddings
are a float32 memmap of unit vectors (SemDeDup normalises when it embeds);

1. clustering: faiss spherical k-means on all items (faiss.Kmeans, 20
   iterations; faiss subsamples to 256 per centroid by itself), then each item's
   nearest centroid and distance by index.search; both arrays saved;
2. sort_clusters: for each cluster, its items, their distance 1 - x.c to the
   centroid (torch), sorted (Python's stable sort, descending: keep hard),
   saved as one .npy per cluster;
3. semdedup: for each cluster, its sorted items' embeddings from the memmap,
   the full similarity matrix (torch), diagonal zeroed, upper triangle, column
   maxima; a pandas table of "remove at eps" flags pickled per cluster;
4. extract: every pickle read back, the kept ids written out (keep.txt: row numbers).

Prints nothing but what it keeps; the benchmark measures its time and memory.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import torch


def clustering(data: np.ndarray, k: int, seed: int, out: Path) -> None:
    kmeans = faiss.Kmeans(data.shape[1], k, niter=20, seed=seed, spherical=True, verbose=False)
    kmeans.train(data)
    similarity, nearest = kmeans.index.search(data, 1)
    np.save(out / "kmeans_centroids.npy", kmeans.centroids)
    np.save(out / "dist_to_cent.npy", 1 - similarity[:, 0])
    np.save(out / "nearest_cent.npy", nearest[:, 0])


def sort_clusters(data: np.ndarray, k: int, out: Path) -> None:
    centroids = np.load(out / "kmeans_centroids.npy")
    nearest = np.load(out / "nearest_cent.npy")
    (out / "sorted").mkdir(exist_ok=True)
    for c in range(k):
        ids = np.where(nearest == c)[0]
        if not len(ids):
            continue
        embeddings = torch.from_numpy(np.asarray(data[ids]))
        distance = (1 - embeddings @ torch.from_numpy(centroids[c])).numpy()
        rows = sorted(zip([f"item{i}" for i in ids], ids, distance), key=lambda r: r[2], reverse=True)
        np.save(out / "sorted" / f"cluster_{c}.npy", np.array(rows, dtype=object), allow_pickle=True)


def semdedup(data: np.ndarray, k: int, eps: float, out: Path) -> None:
    (out / "dataframes").mkdir(exist_ok=True)
    for c in range(k):
        path = out / "sorted" / f"cluster_{c}.npy"
        if not path.exists():
            continue
        rows = np.load(path, allow_pickle=True)
        ids = rows[:, 1].astype(np.int64)
        reps = torch.from_numpy(np.asarray(data[ids])).to(torch.float32)
        similarity = reps @ reps.T
        similarity.fill_diagonal_(0.0)
        triangle = torch.triu(similarity, diagonal=1)
        best = torch.max(triangle, dim=0)[0]
        frame = pd.DataFrame({"indices": ids})
        frame[f"eps={eps}"] = (best > 1 - eps).numpy()
        with open(out / "dataframes" / f"cluster_{c}.pkl", "wb") as fh:
            pickle.dump(frame, fh)


def extract(k: int, eps: float, out: Path) -> None:
    kept = []
    for c in range(k):
        path = out / "dataframes" / f"cluster_{c}.pkl"
        if not path.exists():
            continue
        with open(path, "rb") as fh:
            frame = pickle.load(fh)
        kept.extend(frame["indices"][~frame[f"eps={eps}"]].tolist())
    (out / "keep.txt").write_text("".join(f"{i}\n" for i in sorted(kept)))


def main() -> None:
    embeddings, out, k, eps = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    seed = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    out.mkdir(parents=True, exist_ok=True)
    data = np.load(embeddings, mmap_mode="r")
    clustering(np.ascontiguousarray(data), k, seed, out)
    sort_clusters(data, k, out)
    semdedup(data, k, eps, out)
    extract(k, eps, out)


if __name__ == "__main__":
    main()
