"""The gLM corpus store: the genes of element stores with their ESM2 embeddings, in corpus order, as arrays.

Layout (Zarr v3, schema glmkit.glm-corpus version 1; docs/FORMATS.md is authoritative):

    contigs/name        string (C)       contig name in its element store
    contigs/key         uint64 (C)       first 8 bytes of sha256(source contig name): the unit of the split
    contigs/offsets     int64 (C + 1)    genes of contig i: rows offsets[i]:offsets[i+1] of genes/
    genes/id            string (G)       element id (CDS only, in contig order)
    genes/strand        int8 (G)         +1 / -1
    genes/row           int64 (G)        row of the embedding store standing for the gene's protein
    genes/embedding     float16|float32 (G, dim)   that row, copied: reading a run of genes is one sequential read
    subcontigs/start    int64 (S)        first gene of each gLM sub-contig (non-overlapping windows per contig)
    subcontigs/length   int32 (S)
    subcontigs/contig   int64 (S)        its contig

Built once per corpus (element stores + embedding store + sub-contig sizes) by
`pretrain` (and reused by every run that gives the same inputs), by
`contextualize` in its work folder. Training and inference then read it in
runs of consecutive genes, whatever the embedding store's own row order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from glmkit.io.store import ColumnWriter, close_writers, create_store, finish_store, open_store

SCHEMA = "glmkit.glm-corpus"
GENE_CHUNK = 2048  # genes per chunk of genes/embedding: 5 MB at 1,280 float16


class CorpusWriter:
    """Streams contigs, then the embedding rows, into a new corpus store; ``close()`` marks it complete."""

    def __init__(self, path: str | Path, parameters: dict, inputs: Sequence, embedding_model: dict):
        self.group = create_store(path, SCHEMA, parameters, inputs)
        self.group.attrs["embedding_model"] = embedding_model
        g = self.group
        self.columns = {
            "contigs/name": ColumnWriter(g, "contigs/name", str),
            "contigs/key": ColumnWriter(g, "contigs/key", np.uint64),
            "contigs/offsets": ColumnWriter(g, "contigs/offsets", np.int64),
            "genes/id": ColumnWriter(g, "genes/id", str),
            "genes/strand": ColumnWriter(g, "genes/strand", np.int8),
            "genes/row": ColumnWriter(g, "genes/row", np.int64),
            "subcontigs/start": ColumnWriter(g, "subcontigs/start", np.int64),
            "subcontigs/length": ColumnWriter(g, "subcontigs/length", np.int32),
            "subcontigs/contig": ColumnWriter(g, "subcontigs/contig", np.int64),
        }
        self.columns["contigs/offsets"].extend([0])
        self.n_genes = self.n_contigs = 0
        self.embedding: ColumnWriter | None = None

    def add_contigs(self, names, keys, gene_counts, ids, strands, rows, sub_starts, sub_lengths, sub_contigs) -> None:
        """A batch of contigs with their genes and sub-contigs (sub_starts, sub_contigs local to the batch)."""
        c = self.columns
        c["contigs/name"].extend(names)
        c["contigs/key"].extend(keys)
        c["contigs/offsets"].extend(self.n_genes + np.cumsum(gene_counts))
        c["genes/id"].extend(ids)
        c["genes/strand"].extend(strands)
        c["genes/row"].extend(rows)
        c["subcontigs/start"].extend(self.n_genes + np.asarray(sub_starts, dtype=np.int64))
        c["subcontigs/length"].extend(sub_lengths)
        c["subcontigs/contig"].extend(self.n_contigs + np.asarray(sub_contigs, dtype=np.int64))
        self.n_genes += int(np.sum(gene_counts))
        self.n_contigs += len(gene_counts)

    def add_embeddings(self, block: np.ndarray) -> None:
        """The next rows of genes/embedding (in gene order)."""
        if self.embedding is None:
            self.embedding = ColumnWriter(self.group, "genes/embedding", block.dtype, GENE_CHUNK,
                                          row_shape=block.shape[1:])
        self.embedding.extend(block)

    def close(self, summary: dict) -> None:
        close_writers([*self.columns.values(), *([self.embedding] if self.embedding else [])])
        finish_store(self.group, attributes={"summary": summary})


class CorpusStore:
    """A finished corpus store. Small tables (offsets, keys) are read whole; genes and embeddings by range."""

    REQUIRED = ("contigs/name", "contigs/key", "contigs/offsets", "genes/id", "genes/strand", "genes/row",
                "genes/embedding", "subcontigs/start", "subcontigs/length", "subcontigs/contig")

    def __init__(self, path: str | Path):
        self.path = str(path)
        self.group = open_store(path, SCHEMA, required=self.REQUIRED)
        self.attrs = self.group.attrs.asdict()
        self.embedding = self.group["genes/embedding"]
        self.n_genes = self.embedding.shape[0]
        self.n_contigs = self.group["contigs/key"].shape[0]
        self.n_subcontigs = self.group["subcontigs/start"].shape[0]

    def array(self, name: str):
        return self.group[name]

    def genes(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """(embeddings (n, dim), strands (n,)) of genes start:stop: one sequential read."""
        return self.embedding[start:stop], self.group["genes/strand"][start:stop]
