"""gLM data: the corpus store built from element and embedding stores, the split, normalisation and batches.

Shared by `pretrain` and `contextualize`. A sub-contig is a run of consecutive
CDS of one contig (gLM: non-overlapping runs of 30, shorter than 15 dropped).
Input per gene = standardised embedding (clipped to +-10) + orientation
(+0.5 forward, -0.5 reverse); label = whitened PCA of the standardised
embedding (label_dim - 1 components) + orientation.

Everything here runs in memory bounded by a batch, a window of the corpus or
a block of rows, whatever the corpus size (see bench/scale.py): the corpus
store is written and read in order, the normalisation is fitted in two
streaming passes over the embedding store.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from glmkit.errors import GlmkitError
from glmkit.data.stream import ChunkCache
from glmkit.io.corpus import GENE_CHUNK, CorpusStore, CorpusWriter
from glmkit.io.elements import CDS, ElementStore
from glmkit.io.embeddings import EmbeddingStore, sequence_hash
from glmkit.io.store import gather_rows, store_record
from glmkit.log import plural, progress
from glmkit.memory import release_freed_memory

log = logging.getLogger("glmkit")
CLIP = 10.0


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


def contig_keys(names: Sequence[str]) -> np.ndarray:
    """uint64 keys of source contig names (first 8 bytes of their sha256): what the split is drawn from."""
    return np.array([int.from_bytes(hashlib.sha256(str(n).encode()).digest()[:8], "big") for n in names],
                    dtype=np.uint64)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijective scramble of uint64 values (vectorised)."""
    x = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def split_draw(keys: np.ndarray, seed: int) -> np.ndarray:
    """A uniform [0, 1) draw per contig key and seed: a contig is held out when its draw is below the cut."""
    seed_key = np.uint64(int.from_bytes(hashlib.sha256(f"split:{seed}".encode()).digest()[:8], "big"))
    return (_mix64(np.asarray(keys, dtype=np.uint64) ^ seed_key) >> np.uint64(11)).astype(np.float64) / 2.0 ** 53


# -- building the corpus store ------------------------------------------------------------------------------------

def corpus_parameters(element_paths: Sequence[str], embedding_path: str, size: int, minimum: int) -> dict:
    """What a corpus store is built from: its inputs' checksums (not their paths: a moved corpus is the same
    corpus) and the sub-contig sizes."""
    return {"elements": [store_record(p)["sha256"] for p in element_paths],
            "embeddings": store_record(embedding_path)["sha256"], "subcontig_genes": size,
            "min_subcontig_genes": minimum}


def build_corpus(element_paths: Sequence[str], embedding_path: str, out: Path, size: int = 30,
                 minimum: int = 15) -> CorpusStore:
    """The corpus store of ``element_paths`` at ``out`` (written in ``out``'s own name: the caller publishes).

    Pass 1 reads the element stores batch by batch: each CDS's protein is looked
    up in the embedding store (its own row or its cluster representative's);
    pass 2 copies the embedding rows into gene order (gather_rows). Memory: the
    embedding store's hash index (40 bytes per row), 16 bytes per gene for the
    reordering, and one block of rows.
    """
    store = EmbeddingStore(embedding_path)
    parameters = corpus_parameters(element_paths, embedding_path, size, minimum)
    records = [store_record(p) for p in (*element_paths, embedding_path)]
    writer = CorpusWriter(out, parameters, records, store.model)
    missing, first_missing = 0, None
    n_sub = 0
    for path in element_paths:
        elements = ElementStore(path)
        with progress(total=elements.n_contigs, desc=f"corpus {Path(path).name}", unit="contigs") as bar:
            for batch in elements.batches(columns=("id", "type", "strand", "aa")):   # no nt: most of a batch
                e, offsets = batch.elements, batch.offsets
                is_cds = e["type"] == CDS
                genes = np.flatnonzero(is_cds)
                cds_before = np.concatenate([[0], np.cumsum(is_cds)])
                counts = cds_before[offsets[1:]] - cds_before[offsets[:-1]]  # CDS per contig
                rows = store.rows([sequence_hash(a) for a in e["aa"][genes]])
                if (rows < 0).any():
                    missing += int((rows < 0).sum())
                    first_missing = first_missing or str(e["id"][genes[np.flatnonzero(rows < 0)[0]]])
                starts, lengths, contigs = [], [], []
                gene_offsets = np.concatenate([[0], np.cumsum(counts)])
                for c, n in enumerate(counts.tolist()):
                    for s, t in windows(n, size, minimum):
                        starts.append(gene_offsets[c] + s)
                        lengths.append(t - s)
                        contigs.append(c)
                writer.add_contigs(batch.contigs["name"], contig_keys(batch.contigs["source"]), counts,
                                   e["id"][genes], e["strand"][genes].astype(np.int8), rows, starts, lengths, contigs)
                n_sub += len(starts)
                bar.update(batch.n_contigs)
    if not n_sub:
        raise GlmkitError(f"no sub-contigs of at least {minimum} genes in {', '.join(map(str, element_paths))}")
    if missing:
        raise GlmkitError(f"{embedding_path}: no embedding for {plural(missing, 'protein')} (e.g. gene "
                          f"{first_missing}); run glmkit embed on the same element stores")
    _copy_embeddings(store, writer, out, embedding_path)
    writer.close({"contigs": writer.n_contigs, "genes": writer.n_genes, "subcontigs": n_sub})
    del store
    release_freed_memory()  # the hash index and gather buffers (~100 MB a million proteins): nothing after reuses them
    log.info(f"corpus: {plural(writer.n_genes, 'gene')} in {plural(writer.n_contigs, 'contig')}, "
             f"{plural(n_sub, 'sub-contig')}")
    return CorpusStore(out)


def _copy_embeddings(store: EmbeddingStore, writer: CorpusWriter, out: Path, embedding_path: str) -> None:
    """genes/embedding: the embedding rows in gene order, checked finite (NaN or Inf is named, by gene)."""
    import zarr

    writer.columns["genes/row"].close()  # flushed, so that they can be read back
    writer.columns["genes/id"].close()
    take = zarr.open_array(str(Path(out) / "genes" / "row"), mode="r")[:]
    bad_genes: list[int] = []

    def emit(start: int, block: np.ndarray) -> None:
        bad = np.flatnonzero(~np.isfinite(block).all(1))   # in the block's dtype: no float32 copy of it
        bad_genes.extend((start + bad).tolist())
        writer.add_embeddings(block)

    spill = Path(out).with_name(f".{Path(out).name}.gather")
    try:
        gather_rows(store.embedding, take, emit, GENE_CHUNK * 4, spill)   # 4 chunks a block: 21 MB at 1,280 float16
    finally:
        shutil.rmtree(spill, ignore_errors=True)
    if bad_genes:
        ids = zarr.open_array(str(Path(out) / "genes" / "id"), mode="r")
        names = [str(ids[i]) for i in bad_genes[:5]]
        proteins = len(np.unique(take[bad_genes]))
        raise GlmkitError(f"{embedding_path}: NaN or infinite embeddings for {plural(proteins, 'protein')} "
                          f"(genes {', '.join(names)}{', ...' if len(bad_genes) > 5 else ''})")


# -- the split ------------------------------------------------------------------------------------------------

@dataclass
class Split:
    """Which sub-contigs are held out: those of contigs whose draw is below ``cut`` (by contig, never by gene)."""
    seed: int
    cut: float

    def validation(self, keys: np.ndarray) -> np.ndarray:
        return split_draw(keys, self.seed) < self.cut


def choose_split(corpus, fraction: float, seed: int, items: str = "subcontigs") -> tuple[Split, int, int]:
    """The split for ``fraction`` of contigs, and the numbers of training and validation items (the gLM's
    sub-contigs; ``items="chunks"``: gLM2's chunks of a token corpus store).

    One streaming pass over the item table. A tiny corpus where no contig
    draws below ``fraction`` still holds out the contig with the lowest draw, if
    more than one contig has sub-contigs.
    """
    keys, sub_contig = corpus.array("contigs/key"), corpus.array(f"{items}/contig")
    total = sub_contig.shape[0]
    n_val, lowest, lowest_subs, first, several = 0, np.inf, 0, None, False
    for start in range(0, total, 1 << 20):
        contig = sub_contig[start:start + (1 << 20)]
        lo = int(contig.min())
        draw = split_draw(keys[lo:int(contig.max()) + 1], seed)[contig - lo]
        n_val += int((draw < fraction).sum())
        low = float(draw.min())
        if low < lowest:
            lowest, lowest_subs = low, 0
        if low == lowest:
            lowest_subs += int((draw == low).sum())
        first = int(contig[0]) if first is None else first
        several = several or bool((contig != first).any())
    if fraction > 0 and not n_val and several:
        return Split(seed, float(np.nextafter(lowest, 1.0))), total - lowest_subs, lowest_subs
    return Split(seed, fraction), total - n_val, n_val


def gene_ranges(first: np.ndarray, length: np.ndarray) -> np.ndarray:
    """The concatenated runs first[i] .. first[i] + length[i] - 1, without a Python loop."""
    length = np.asarray(length, dtype=np.int64)
    run_start = np.cumsum(length) - length
    return np.repeat(np.asarray(first, dtype=np.int64) - run_start, length) + np.arange(int(length.sum()))


# -- normalisation ----------------------------------------------------------------------------------------------

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


# -- batches ----------------------------------------------------------------------------------------------------

class GeneReader:
    """Embeddings and strands of runs of genes of a corpus store, through a cache of whole chunks (ChunkCache)."""

    def __init__(self, corpus: CorpusStore, cache_chunks: int = 16):
        chunk = corpus.embedding.chunks[0]
        self._rows = ChunkCache(lambda k: corpus.genes(k * chunk, (k + 1) * chunk), chunk, cache_chunks)

    @property
    def reads(self) -> int:
        return self._rows.reads

    def genes(self, start: int, length: int) -> tuple[np.ndarray, np.ndarray]:
        return self._rows.rows(start, length)


def make_batch(reader: GeneReader, starts: np.ndarray, lengths: np.ndarray, rows: list[np.ndarray],
               norm: Normalization, capacity: int):
    """Rows of packed sub-contigs -> features (B, L, dim + 1), labels (B, L, label_dim), segments (B, L).

    ``rows`` hold indices into ``starts``/``lengths`` (sub-contigs' first gene and length). The genes of the
    whole batch are standardised and projected on the label PCA at once (one GEMM).
    """
    B, dim = len(rows), norm.feature_mean.shape[0]
    ldim = norm.label_components.shape[1] + 1
    parts, where, segment_of = [], [], []
    for b, row in enumerate(rows):
        pos = 0
        for seg, i in enumerate(row, 1):
            n = int(lengths[i])
            parts.append(reader.genes(int(starts[i]), n))
            where.append(b * capacity + pos + np.arange(n))
            segment_of.append(np.full(n, seg))
            pos += n
    x, labels = norm.transform(np.concatenate([p[0] for p in parts]))                   # (N, dim), (N, ldim - 1)
    orientation = np.where(np.concatenate([p[1] for p in parts]) > 0, 0.5, -0.5).astype(np.float32)
    flat = np.concatenate(where)
    features = np.zeros((B * capacity, dim + 1), np.float32)
    target = np.zeros((B * capacity, ldim), np.float32)
    segments = np.zeros(B * capacity, np.int64)
    features[flat, :dim], features[flat, dim] = x, orientation
    target[flat, :ldim - 1], target[flat, ldim - 1] = labels, orientation
    segments[flat] = np.concatenate(segment_of)
    return features.reshape(B, capacity, dim + 1), target.reshape(B, capacity, ldim), segments.reshape(B, capacity)
