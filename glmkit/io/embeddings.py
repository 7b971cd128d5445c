"""The embedding store: one row per distinct protein sequence, keyed by the sequence's sha256.

Layout (Zarr v3, schema glmkit.embeddings version 1; docs/FORMATS.md is authoritative):

    hash        string (n,)       sha256 hex of the upper-case protein sequence (no '*')
    length      int32 (n,)        residues in the sequence
    embedding   float32|float16 (n, dim), chunks (chunk_rows, dim)

The model, layer and pooling are root attributes (``model``); every row of a
store was computed the same way. The store is written chunk by chunk into a
work folder beside the output (``.NAME.work``), so a killed run restarted with the
same command skips the chunks already done, then is published by a rename.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from glmkit.errors import GlmkitError
from glmkit.io.files import publish, remove, work_folder
from glmkit.io.store import create_store, finish_store, open_store

SCHEMA = "glmkit.embeddings"
log = logging.getLogger("glmkit")


def sequence_hash(sequence: bytes) -> str:
    return hashlib.sha256(sequence).hexdigest()


class EmbeddingStore:
    """A finished embedding store: rows looked up by sequence hash."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        self.group = open_store(path, SCHEMA)
        self.attrs = self.group.attrs.asdict()
        self.model: dict = self.attrs["model"]
        self.hashes = self.group["hash"][:].astype(object)
        self.lengths = self.group["length"][:]
        self.embedding = self.group["embedding"]
        self._row = None

    def __len__(self) -> int:
        return len(self.hashes)

    @property
    def row_of(self) -> dict[str, int]:
        if self._row is None:
            self._row = {h: i for i, h in enumerate(self.hashes)}
        return self._row

    def get(self, hashes: Sequence[str]) -> np.ndarray:
        """Embeddings of the given hashes, in that order; a missing hash is an error naming it."""
        try:
            rows = np.array([self.row_of[h] for h in hashes], dtype=np.int64)
        except KeyError as e:
            raise GlmkitError(f"{self.path}: no embedding for protein {e.args[0]}") from None
        if not len(rows):
            return np.zeros((0, self.embedding.shape[1]), dtype=self.embedding.dtype)
        order = np.argsort(rows)
        out = np.empty((len(rows), self.embedding.shape[1]), dtype=self.embedding.dtype)
        out[order] = self.embedding.get_orthogonal_selection((rows[order], slice(None)))
        return out


class ResumableEmbeddingWriter:
    """Writes a planned store chunk by chunk; restarting with the same plan resumes it."""

    def __init__(self, final: str | Path, parameters: dict, inputs: Sequence, hashes: Sequence[str],
                 lengths: Sequence[int], dim: int, dtype: str, model: dict, chunk_rows: int):
        self.final = Path(final)
        self.work = work_folder(self.final)
        self.chunk_rows = chunk_rows
        self.n = len(hashes)
        plan = hashlib.sha256(json.dumps([list(hashes), dim, dtype, model, chunk_rows]).encode()).hexdigest()
        self.group = self._resume(plan)
        if self.group is None:
            remove(self.work)
            self.group = create_store(self.work, SCHEMA, parameters, inputs)
            self.group.attrs.update({"model": model, "plan_sha256": plan})
            rows = max(chunk_rows, 1)
            self.group.create_array("hash", data=np.array(list(hashes), dtype=np.dtypes.StringDType()), chunks=(1 << 16,))
            self.group.create_array("length", data=np.asarray(lengths, dtype=np.int32), chunks=(1 << 16,))
            self.group.create_array("embedding", shape=(self.n, dim), chunks=(rows, dim), dtype=dtype)
            # one flag per chunk, each its own file: set only after its chunk is fully written
            self.group.create_array("chunk_done", shape=(self.n_chunks,), chunks=(1,), dtype=bool, fill_value=False)
        self.done = self.group["chunk_done"][:]

    @property
    def n_chunks(self) -> int:
        return -(-self.n // self.chunk_rows)

    def _resume(self, plan: str):
        if not self.work.exists():
            return None
        try:
            import zarr

            group = zarr.open_group(str(self.work), mode="r+", zarr_format=3)
            if group.attrs.get("plan_sha256") == plan:
                done = int(group["chunk_done"][:].sum())
                log.info(f"embed: resuming {self.work} ({done} of {self.n_chunks} chunks already done)")
                return group
        except Exception:
            pass
        log.info(f"embed: discarding {self.work}: it was started with other inputs or parameters")
        return None

    def pending(self) -> list[int]:
        return [k for k in range(self.n_chunks) if not self.done[k]]

    def rows(self, chunk: int) -> range:
        return range(chunk * self.chunk_rows, min((chunk + 1) * self.chunk_rows, self.n))

    def write_chunk(self, chunk: int, embeddings: np.ndarray) -> None:
        r = self.rows(chunk)
        self.group["embedding"][r.start:r.stop] = embeddings
        self.group["chunk_done"][chunk] = True
        self.done[chunk] = True

    def publish(self, inputs: Sequence) -> None:
        assert self.done.all(), "publishing an unfinished store"
        del self.group["chunk_done"]
        finish_store(self.group, inputs)
        publish(self.work, self.final)
