"""Windows of genes along a contig: the gLM's sub-contigs and contextualize's windows (torch-free)."""

from __future__ import annotations

import numpy as np


def windows(n: int, size: int, minimum: int, overlap: bool = False) -> list[tuple[int, int]]:
    """[start, end) runs of ``size``: non-overlapping (last shorter, dropped under ``minimum``), or, with
    ``overlap``, every ``size // 2`` so that each gene lies well inside some window (contextualize)."""
    if not overlap:
        return [(s, min(s + size, n)) for s in range(0, n, size) if min(s + size, n) - s >= minimum]
    if n <= size:
        return [(0, n)] if n >= minimum else []
    step = max(1, size // 2)
    starts = list(range(0, n - size, step)) + [n - size]
    return [(s, s + size) for s in starts]


def centrality(position: int, length: int) -> int:
    return min(position, length - 1 - position)


def best_windows(n_genes: int, size: int, kind: str = "centred") -> tuple[list[tuple[int, int]], np.ndarray,
                                                                          np.ndarray]:
    """A contig's windows, and for each gene the window it is most central in and its position there.

    kind "reference": consecutive windows of ``size`` genes (the last shorter), each gene in the only one that
    holds it, as the gLM reference batches contigs."""
    if kind == "reference":
        genes = np.arange(n_genes)
        return windows(n_genes, size, 1), genes // size, genes % size
    spans = windows(n_genes, size, 1, overlap=True)
    best_score = np.full(n_genes, -1)
    window_of, position = np.zeros(n_genes, np.int64), np.zeros(n_genes, np.int64)
    for w, (s, t) in enumerate(spans):
        p = np.arange(t - s)
        score = np.minimum(p, t - s - 1 - p)
        better = score > best_score[s:t]  # strictly: the first window wins ties
        best_score[s:t][better] = score[better]
        window_of[s:t][better] = w
        position[s:t][better] = p[better]
    return spans, window_of, position


def gene_ranges(first: np.ndarray, length: np.ndarray) -> np.ndarray:
    """The concatenated runs first[i] .. first[i] + length[i] - 1, without a Python loop."""
    length = np.asarray(length, dtype=np.int64)
    run_start = np.cumsum(length) - length
    return np.repeat(np.asarray(first, dtype=np.int64) - run_start, length) + np.arange(int(length.sum()))
