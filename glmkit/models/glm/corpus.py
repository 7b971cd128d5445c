"""The gLM's corpus: element and embedding stores into the corpus store (genes with their embeddings in corpus
order, sub-contigs as arrays), and batches of packed sub-contigs read from it.

Shared by `pretrain` and `contextualize`. A sub-contig is a run of consecutive
CDS of one contig (gLM: non-overlapping runs of 30, shorter than 15 dropped).
Everything here runs in memory bounded by a batch, a window of the corpus or
a block of rows, whatever the corpus size (see bench/scale.py): the corpus
store is written and read in order.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from glmkit.data.split import contig_keys
from glmkit.data.stream import ChunkCache
from glmkit.errors import GlmkitError
from glmkit.genome.windows import windows
from glmkit.io.corpus import GENE_CHUNK, CorpusStore, CorpusWriter
from glmkit.io.corpus import SCHEMA as SCHEMA  # the schema of the store these build (the family's hook)
from glmkit.io.elements import CDS, ElementStore
from glmkit.io.embeddings import EmbeddingStore, sequence_hash
from glmkit.io.store import gather_rows, store_record
from glmkit.log import plural, progress
from glmkit.models.glm.normalization import Normalization
from glmkit.resources import release_freed_memory

log = logging.getLogger("glmkit")


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


# -- the family's corpus hooks (glmkit/models/spec.py) ------------------------------------------------------------

STORE = CorpusStore   # the store these build and read (SCHEMA: its schema)


def parameters(element_paths, embedding_path, options, meta=None) -> dict:
    return corpus_parameters(element_paths, embedding_path, options.subcontig_genes, options.min_subcontig_genes)


def build(element_paths, embedding_path, out: Path, options, meta=None) -> None:
    build_corpus(element_paths, embedding_path, out, options.subcontig_genes, options.min_subcontig_genes)


def check_resume_inputs(meta: dict, element_paths, embedding_path, options, where: Path) -> None:
    """Before anything is built: a resumed run must read the very corpus its checkpoint was trained on."""
    from glmkit.io.embeddings import require_same_model

    require_same_model(meta.get("embedding_model", {}), embedding_path, where)
    if meta.get("corpus") and meta["corpus"] != parameters(element_paths, embedding_path, options):
        raise GlmkitError(f"{where}: the element or embedding stores differ from those this checkpoint was trained "
                          f"on; resume with the same inputs")
