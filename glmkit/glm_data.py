"""gLM data: sub-contigs of genes from element stores, their ESM2 embeddings, and the model's normalisation.

Shared by `pretrain` and `contextualize`. A sub-contig is a run of consecutive
CDS of one contig (gLM: non-overlapping runs of 30, shorter than 15 dropped).
Input per gene = standardised embedding (clipped to +-10) + orientation
(+0.5 forward, -0.5 reverse); label = whitened PCA of the standardised
embedding (label_dim - 1 components) + orientation.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from glmkit.errors import GlmkitError
from glmkit.io.elements import CDS, ElementStore
from glmkit.io.embeddings import EmbeddingStore, sequence_hash

CLIP = 10.0


@dataclass
class SubContig:
    contig: str            # source contig: the unit of the train/validation split
    gene_ids: list[str]
    rows: np.ndarray       # index of each gene's protein in Corpus.embeddings
    strands: np.ndarray    # +1 / -1


@dataclass
class Corpus:
    subcontigs: list[SubContig]
    embeddings: np.ndarray  # (n_proteins, esm_dim) float32
    model: dict             # the embedding store's model identity


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


def load_corpus(element_paths: list[str], embedding_path: str, size: int = 30, minimum: int = 15,
                overlap: bool = False) -> Corpus:
    store = EmbeddingStore(embedding_path)
    row_of: dict[str, int] = {}
    subcontigs = []
    for path in element_paths:
        elements = ElementStore(path)
        for batch in elements.batches():
            e, offsets = batch.elements, batch.offsets
            for c in range(batch.n_contigs):
                idx = np.arange(offsets[c], offsets[c + 1])
                idx = idx[e["type"][idx] == CDS]
                for s, t in windows(len(idx), size, minimum, overlap):
                    genes = idx[s:t]
                    hashes = [sequence_hash(a) for a in e["aa"][genes]]
                    rows = np.array([row_of.setdefault(h, len(row_of)) for h in hashes], dtype=np.int64)
                    subcontigs.append(SubContig(str(batch.contigs["source"][c]), list(e["id"][genes]), rows,
                                                e["strand"][genes].astype(np.int8)))
    if not subcontigs:
        raise GlmkitError(f"no sub-contigs of at least {minimum} genes in {', '.join(element_paths)}")
    hashes = list(row_of)
    store_rows = store.rows(hashes)  # a cluster member's protein finds its representative's row
    missing = np.flatnonzero(store_rows < 0)
    if len(missing):
        gene = next(g for sc in subcontigs for g, r in zip(sc.gene_ids, sc.rows) if r == missing[0])
        raise GlmkitError(f"{embedding_path}: no embedding for {len(missing):,} proteins (e.g. gene {gene}); "
                          f"run glmkit embed on the same element stores")
    embeddings = store.read_rows(store_rows).astype(np.float32)
    bad = np.flatnonzero(~np.isfinite(embeddings).all(1))
    if len(bad):
        bad_rows = set(bad.tolist())
        genes = [g for sc in subcontigs for g, r in zip(sc.gene_ids, sc.rows) if r in bad_rows][:5]
        raise GlmkitError(f"{embedding_path}: NaN or infinite embeddings for {len(bad):,} proteins "
                          f"(genes {', '.join(genes)}{', ...' if len(bad) > 5 else ''})")
    return Corpus(subcontigs, embeddings, store.model)


def split_by_contig(subcontigs: list[SubContig], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices of training and validation sub-contigs; a contig's sub-contigs all go to one side."""
    def draw(contig: str) -> float:
        digest = hashlib.sha256(f"{seed}:{contig}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2 ** 64

    val = [i for i, sc in enumerate(subcontigs) if draw(sc.contig) < fraction]
    if fraction > 0 and not val and len({sc.contig for sc in subcontigs}) > 1:
        first = subcontigs[0].contig  # tiny corpora: still hold one contig out
        val = [i for i, sc in enumerate(subcontigs) if sc.contig == first]
    held = set(val)
    return [i for i in range(len(subcontigs)) if i not in held], val


@dataclass
class Normalization:
    feature_mean: np.ndarray     # (esm_dim,)
    feature_std: np.ndarray
    label_components: np.ndarray  # (esm_dim, label_dim - 1)
    label_scale: np.ndarray       # (label_dim - 1,)  1 / sqrt(eigenvalue): whitening

    @classmethod
    def fit(cls, embeddings: np.ndarray, components: int = 99) -> "Normalization":
        x = embeddings.astype(np.float64)
        mean, std = x.mean(0), x.std(0)
        std[std == 0] = 1.0
        z = np.clip((x - mean) / std, -CLIP, CLIP)
        z = z - z.mean(0)
        k = min(components, z.shape[1], max(1, z.shape[0] - 1))
        _, s, vt = np.linalg.svd(z, full_matrices=False)
        # fix each component's sign (largest loading positive) so fits are reproducible
        vt = vt[:k] * np.sign(vt[:k][np.arange(k), np.abs(vt[:k]).argmax(1)])[:, None]
        eig = s[:k] ** 2 / max(1, z.shape[0] - 1)
        return cls(mean.astype(np.float32), std.astype(np.float32), vt.T.astype(np.float32),
                   (1.0 / np.sqrt(np.maximum(eig, 1e-12))).astype(np.float32))

    def standardize(self, embeddings: np.ndarray) -> np.ndarray:
        return np.clip((embeddings - self.feature_mean) / self.feature_std, -CLIP, CLIP).astype(np.float32)

    def labels(self, standardized: np.ndarray) -> np.ndarray:
        return (standardized @ self.label_components * self.label_scale).astype(np.float32)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"feature_mean": self.feature_mean, "feature_std": self.feature_std,
                "label_components": self.label_components, "label_scale": self.label_scale}


def pack(lengths: list[int], capacity: int) -> list[list[int]]:
    """Greedy first-fit of items (longest first) into rows of ``capacity`` genes."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(capacity - lengths[i])
    return rows


def make_batch(corpus: Corpus, members: list[list[int]], standardized: np.ndarray, labels: np.ndarray,
               capacity: int):
    """Rows of packed sub-contigs -> features (B, L, dim + 1), labels (B, L, label_dim), segments (B, L) numpy."""
    B, dim, ldim = len(members), standardized.shape[1], labels.shape[1] + 1
    features = np.zeros((B, capacity, dim + 1), np.float32)
    target = np.zeros((B, capacity, ldim), np.float32)
    segments = np.zeros((B, capacity), np.int64)
    for b, row in enumerate(members):
        pos = 0
        for seg, i in enumerate(row, 1):
            sc = corpus.subcontigs[i]
            n = len(sc.rows)
            orientation = np.where(sc.strands > 0, 0.5, -0.5).astype(np.float32)
            features[b, pos:pos + n, :dim] = standardized[sc.rows]
            features[b, pos:pos + n, dim] = orientation
            target[b, pos:pos + n, :ldim - 1] = labels[sc.rows]
            target[b, pos:pos + n, ldim - 1] = orientation
            segments[b, pos:pos + n] = seg
            pos += n
    return features, target, segments
