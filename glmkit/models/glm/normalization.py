"""The gLM's inputs and labels from ESM2 embeddings: input per gene = standardised embedding (clipped to +-10)
+ orientation (+0.5 forward, -0.5 reverse); label = whitened PCA of the standardised embedding
(label_dim - 1 components) + orientation. Fitted on the training proteins in two streaming passes over the
embedding store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from glmkit.data.split import Split
from glmkit.errors import GlmkitError
from glmkit.genome.windows import gene_ranges
from glmkit.io.corpus import CorpusStore
from glmkit.io.embeddings import EmbeddingStore

CLIP = 10.0


@dataclass
class Normalization:
    """Per-feature standardisation of ESM2 embeddings and the whitened PCA of the labels.

    Two arithmetics. "glmkit" (what pretrain fits): float32, standardised
    values clipped to +-CLIP. "reference" (an imported gLM release): what the
    gLM's batch_data.py does — embeddings cast to float16, standardised in
    float64 without clipping, projected as scikit-learn's whitened PCA does
    ((z - mean) @ components.T / sqrt(explained variance)), and features and
    labels rounded to float16, which is how the reference stores them.
    """
    feature_mean: np.ndarray      # (esm_dim,)
    feature_std: np.ndarray
    label_components: np.ndarray  # (esm_dim, label_dim - 1)
    label_scale: np.ndarray       # (label_dim - 1,)  1 / sqrt(eigenvalue): whitening
    label_mean: np.ndarray | None = None   # (esm_dim,) the PCA's centre in standardised space; None = 0
    arithmetic: str = "glmkit"    # or "reference"

    ARITHMETICS = ("glmkit", "reference")

    def __post_init__(self):
        # One memory layout, fitted or loaded: BLAS sums a product in an order that depends on the operands'
        # layout, so an F-ordered fit (eigh's) and its C-ordered reload gave labels differing in the last bit,
        # and a resumed run's validation loss differed from the uninterrupted run's
        for name in ("feature_mean", "feature_std", "label_components", "label_scale", "label_mean"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, np.ascontiguousarray(value))

    @classmethod
    def fit(cls, blocks, components: int = 99) -> "Normalization":
        """Fitted in two streaming passes over ``blocks()`` (a callable giving an iterator of row blocks, the same
        rows each time): exact per-feature mean and standard deviation, then the exact covariance of the clipped
        standardised rows in float64, whose leading eigenvectors are the PCA. Each component's sign is fixed
        (largest loading positive), so that fits are reproducible."""
        n, total, squares = 0, None, None
        for x in blocks():
            x = np.asarray(x, dtype=np.float64)
            if total is None:
                total, squares = np.zeros(x.shape[1]), np.zeros(x.shape[1])
            n += len(x)
            total += x.sum(0)
            squares += np.einsum("ij,ij->j", x, x)
        if not n:
            raise GlmkitError("no training proteins to fit the normalisation on")
        mean = total / n
        std = np.sqrt(np.maximum(squares / n - mean ** 2, 0.0))
        std[std == 0] = 1.0
        z_total, zz = np.zeros_like(mean), np.zeros((len(mean), len(mean)))
        for x in blocks():
            z = np.clip((np.asarray(x, dtype=np.float64) - mean) / std, -CLIP, CLIP)
            z_total += z.sum(0)
            zz += z.T @ z
        z_mean = z_total / n
        covariance = (zz - n * np.outer(z_mean, z_mean)) / max(1, n - 1)
        eig, vectors = np.linalg.eigh(covariance)
        order = np.argsort(eig)[::-1]
        k = min(components, len(mean), max(1, n - 1))
        eig, vectors = eig[order][:k], vectors[:, order][:, :k]
        vectors = vectors * np.sign(vectors[np.abs(vectors).argmax(0), np.arange(k)])[None, :]
        return cls(mean.astype(np.float32), std.astype(np.float32), vectors.astype(np.float32),
                   (1.0 / np.sqrt(np.maximum(eig, 1e-12))).astype(np.float32), z_mean.astype(np.float32))

    def standardize(self, embeddings: np.ndarray) -> np.ndarray:
        return self.transform(embeddings)[0]

    def labels(self, standardized: np.ndarray) -> np.ndarray:
        """glmkit arithmetic: the labels of rows already standardised by ``standardize``."""
        centred = standardized if self.label_mean is None else standardized - self.label_mean
        return (centred @ self.label_components * self.label_scale).astype(np.float32)

    def transform(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(standardised features (n, esm_dim), labels (n, label_dim - 1)), float32, in this normalisation's
        arithmetic."""
        if self.arithmetic == "reference":
            z = (np.asarray(embeddings).astype(np.float16).astype(np.float64) - self.feature_mean) / self.feature_std
            centred = z if self.label_mean is None else z - self.label_mean
            labels = centred @ self.label_components.astype(np.float64) * self.label_scale.astype(np.float64)
            return z.astype(np.float16).astype(np.float32), labels.astype(np.float16).astype(np.float32)
        x = np.clip((embeddings - self.feature_mean) / self.feature_std, -CLIP, CLIP).astype(np.float32)
        return x, self.labels(x)

    def arrays(self) -> dict[str, np.ndarray]:
        found = {"feature_mean": self.feature_mean, "feature_std": self.feature_std,
                 "label_components": self.label_components, "label_scale": self.label_scale}
        if self.label_mean is not None:
            found["label_mean"] = self.label_mean
        return found

    @classmethod
    def from_checkpoint(cls, meta: dict, tensors: dict, where) -> "Normalization":
        """The normalisation a checkpoint carries: normalization.safetensors and config.json's "normalization"."""
        arithmetic = meta.get("normalization", {}).get("arithmetic", "glmkit")
        if arithmetic not in cls.ARITHMETICS:
            raise GlmkitError(f"{where}: unknown normalisation arithmetic {arithmetic!r}")
        names = ("feature_mean", "feature_std", "label_components", "label_scale", "label_mean")
        unknown = sorted(set(tensors) - set(names))
        if unknown:
            raise GlmkitError(f"{where}: unexpected normalisation tensor {unknown[0]}")
        return cls(**{k: v.numpy() for k, v in tensors.items()}, arithmetic=arithmetic)


def training_rows(corpus: CorpusStore, split: Split, n_rows: int) -> np.ndarray:
    """Which embedding-store rows the training sub-contigs use (bool per row): what the normalisation is fitted
    on (distinct proteins, as the gLM fitted it). One streaming pass over the sub-contig table."""
    used = np.zeros(n_rows, dtype=bool)
    keys = corpus.array("contigs/key")
    starts, lengths = corpus.array("subcontigs/start"), corpus.array("subcontigs/length")
    sub_contig, gene_row = corpus.array("subcontigs/contig"), corpus.array("genes/row")
    step = 1 << 16
    for s in range(0, corpus.n_subcontigs, step):
        contig = sub_contig[s:s + step]
        lo = int(contig.min())
        train = ~split.validation(keys[lo:int(contig.max()) + 1])[contig - lo]
        first, length = starts[s:s + step][train], lengths[s:s + step][train]
        if len(first):
            base = int(first.min())
            rows = gene_row[base:int((first + length).max())]
            used[rows[gene_ranges(first - base, length)]] = True
    return used


def fit_normalization(corpus: CorpusStore, embedding_path: str, split: Split) -> Normalization:
    """The normalisation fitted on the distinct proteins of the training sub-contigs, streaming the embedding
    store chunk by chunk (two passes)."""
    store = EmbeddingStore(embedding_path)
    used = training_rows(corpus, split, len(store))
    array = store.embedding
    chunk = array.chunks[0]

    def blocks() -> Iterator[np.ndarray]:
        for start in range(0, array.shape[0], chunk):
            take = used[start:start + chunk]
            if take.any():
                yield array[start:start + chunk][take]

    return Normalization.fit(blocks, components=min(99, array.shape[1] - 1))

