"""The gLM2 token corpus store: the contigs of element stores as gLM2 tokens, cut into chunks, as arrays.

Layout (Zarr v3, schema glmkit.glm2-corpus version 1; docs/FORMATS.md is authoritative):

    contigs/name        string (C)       contig name in its element store
    contigs/key         uint64 (C)       first 8 bytes of sha256(source contig name): the unit of the split
    contigs/offsets     int64 (C + 1)    chunks of contig i: rows offsets[i]:offsets[i+1] of chunks/
    contigs/elements    int64 (C + 1)    elements of contig i: rows elements[i]:elements[i+1] of elements/
    contigs/token_counts int64 (C, 37)   occurrences of each token id in the contig's chunks (unigram baselines)
    chunks/start        int64 (K)        first token of each chunk in tokens
    chunks/length       int32 (K)        its tokens (<cls> included), at most the context
    chunks/contig       int64 (K)        its contig
    tokens              uint8 (T)        every chunk's tokens, chunk after chunk (ids of glmkit/models/glm2/tokens.py)
    elements/id         string (E)       element id, in contig order (CDS and IGS)
    elements/type       uint8 (E)        0 CDS, 1 IGS
    elements/contig     int64 (E)
    elements/pieces     int64 (E + 1)    pieces of element i: rows pieces[i]:pieces[i+1] of pieces/
    pieces/start        int64 (P)        first residue token (after the strand token) of a piece, in tokens
    pieces/length       int32 (P)        its residue tokens

A chunk is `<cls>` followed by whole elements, each its strand token and its
residues. An element longer than the context (context - 2 residues) is cut
into pieces, each a chunk of its own (`<cls>`, the strand token, the piece's
residues): so an element has one piece unless it is that long.

Built once per corpus and context by `pretrain --arch glm2` (reused by every
run on the same inputs) and by `contextualize` in its work folder. Chunks are
stored in corpus order, so a window of consecutive chunks is one sequential
read of tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from glmkit.models.glm2.tokens import VOCAB
from glmkit.io.store import ColumnWriter, close_writers, create_store, finish_store, open_store

SCHEMA = "glmkit.glm2-corpus"
VOCAB_SIZE = len(VOCAB)
TOKEN_CHUNK = 1 << 20  # tokens per chunk of the tokens array: 1 MB, the unit of reads and of the read cache


class TokenCorpusWriter:
    """Streams contigs (their chunks, elements and pieces) into a new token corpus store."""

    def __init__(self, path: str | Path, parameters: dict, inputs: Sequence):
        self.group = create_store(path, SCHEMA, parameters, inputs)
        g = self.group
        self.columns = {name: ColumnWriter(g, name, dtype, TOKEN_CHUNK if name == "tokens" else None)
                        for name, dtype in (("contigs/name", str), ("contigs/key", np.uint64),
                                            ("contigs/offsets", np.int64), ("contigs/elements", np.int64),
                                            ("chunks/start", np.int64),
                                            ("chunks/length", np.int32), ("chunks/contig", np.int64),
                                            ("tokens", np.uint8), ("elements/id", str), ("elements/type", np.uint8),
                                            ("elements/contig", np.int64), ("elements/pieces", np.int64),
                                            ("pieces/start", np.int64), ("pieces/length", np.int32))}
        self.columns["contigs/token_counts"] = ColumnWriter(g, "contigs/token_counts", np.int64, row_shape=(VOCAB_SIZE,))
        self.columns["contigs/offsets"].extend([0])
        self.columns["contigs/elements"].extend([0])
        self.columns["elements/pieces"].extend([0])
        self.n_contigs = self.n_chunks = self.n_tokens = self.n_elements = self.n_pieces = 0

    def add(self, names, keys, token_counts, chunk_counts, chunk_lengths, chunk_contigs, tokens, element_ids, element_types,
            element_contigs, piece_counts, piece_starts, piece_lengths) -> None:
        """A batch of contigs. Contig numbers and token offsets (piece_starts) are local to the batch."""
        c = self.columns
        chunk_lengths = np.asarray(chunk_lengths, dtype=np.int64)
        c["contigs/name"].extend(names)
        c["contigs/key"].extend(keys)
        c["contigs/token_counts"].extend(token_counts)
        c["contigs/offsets"].extend(self.n_chunks + np.cumsum(chunk_counts))
        c["chunks/start"].extend(self.n_tokens + np.cumsum(chunk_lengths) - chunk_lengths)
        c["chunks/length"].extend(chunk_lengths)
        c["chunks/contig"].extend(self.n_contigs + np.asarray(chunk_contigs, dtype=np.int64))
        c["tokens"].extend(tokens)
        c["elements/id"].extend(element_ids)
        c["elements/type"].extend(element_types)
        element_contigs = np.asarray(element_contigs, dtype=np.int64)
        c["contigs/elements"].extend(self.n_elements + np.cumsum(np.bincount(element_contigs, minlength=len(names))))
        c["elements/contig"].extend(self.n_contigs + element_contigs)
        c["elements/pieces"].extend(self.n_pieces + np.cumsum(piece_counts))
        c["pieces/start"].extend(self.n_tokens + np.asarray(piece_starts, dtype=np.int64))
        c["pieces/length"].extend(piece_lengths)
        self.n_contigs += len(names)
        self.n_chunks += len(chunk_lengths)
        self.n_tokens += int(chunk_lengths.sum())
        self.n_elements += len(element_ids)
        self.n_pieces += len(piece_starts)

    def close(self, summary: dict) -> None:
        close_writers(list(self.columns.values()))
        finish_store(self.group, attributes={"summary": summary})


class TokenCorpusStore:
    """A finished token corpus store. Tables are read by range; ``tokens(a, b)`` is one sequential read."""

    REQUIRED = ("contigs/name", "contigs/key", "contigs/offsets", "contigs/elements", "contigs/token_counts", "chunks/start", "chunks/length", "chunks/contig",
                "tokens", "elements/id", "elements/type", "elements/contig", "elements/pieces", "pieces/start",
                "pieces/length")

    def __init__(self, path: str | Path):
        self.path = str(path)
        self.group = open_store(path, SCHEMA, required=self.REQUIRED)
        self.attrs = self.group.attrs.asdict()
        self.n_contigs = self.group["contigs/key"].shape[0]
        self.n_chunks = self.group["chunks/start"].shape[0]
        self.n_tokens = self.group["tokens"].shape[0]
        self.n_elements = self.group["elements/id"].shape[0]

    def array(self, name: str):
        return self.group[name]

    def tokens(self, start: int, stop: int) -> np.ndarray:
        return self.group["tokens"][start:stop]
