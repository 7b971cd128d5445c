"""The embedding store: one row per distinct protein sequence, keyed by the sequence's sha256.

Layout (Zarr v3, schema glmkit.embeddings version 2; docs/FORMATS.md is authoritative):

    hash               string (n,)       sha256 hex of the upper-case protein sequence (no '*')
    length             int32 (n,)        residues in the sequence
    embedding          float32|float16 (n, dim), chunks (chunk_rows, dim)
    aliases/hash       string (m,)       proteins that have no row of their own (MMseqs2 cluster members) ...
    aliases/row        int64 (m,)        ... and the row that stands for each (its representative's)

The model, layer and pooling are root attributes (``model``); every row of a
store was computed the same way. The store is written chunk by chunk into a
work folder beside the output (``.NAME.work``), so a killed run restarted with the
same command skips the chunks already done, then is published by a rename.
Version 1 stores (no aliases) are read as they are.
"""

from __future__ import annotations

import binascii
import functools
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from glmkit.errors import GlmkitError
from glmkit.io.files import clear_work_folder, publish, remove, work_folder
from glmkit.io.store import create_store, finish_store, new_array, open_store

SCHEMA = "glmkit.embeddings"
HASH_CHUNK_ROWS = 1 << 16   # rows a chunk of the hash, length and alias columns
log = logging.getLogger("glmkit")


def sequence_hash(sequence: bytes) -> str:
    return hashlib.sha256(sequence).hexdigest()


def digests(hexes) -> np.ndarray:
    """sha256 hex strings -> fixed-width 32-byte keys (S32), converted in bulk (no Python loop per hash)."""
    fixed = np.asarray(hexes, dtype="S64")
    if not len(fixed):
        return np.zeros(0, dtype="S32")
    try:
        return np.frombuffer(binascii.unhexlify(np.ascontiguousarray(fixed).view(np.uint8)), dtype="S32")   # no copy
    except binascii.Error:
        bad = next(h for h in fixed if len(h) != 64 or not all(c in b"0123456789abcdef" for c in h))
        raise GlmkitError(f"not a sha256 hex digest: {bad.decode(errors='replace')!r}") from None


class HashIndex:
    """Rows by sequence hash through a sorted array of 32-byte digests: 40 bytes per key, not a dict of strings."""

    def __init__(self, keys: np.ndarray, rows: np.ndarray):
        """``keys``: S32 digests (``digests(hexes)``), one per row of ``rows``."""
        order = np.argsort(keys, kind="stable")
        self.keys, self.rows = keys[order], np.asarray(rows, dtype=np.int64)[order]

    @classmethod
    def of_hexes(cls, hexes, rows: np.ndarray) -> HashIndex:
        return cls(digests(hexes), rows)

    def __len__(self) -> int:
        return len(self.keys)

    def lookup(self, hexes) -> np.ndarray:
        """Row of each hash, -1 where absent."""
        return self.lookup_digests(digests(hexes))

    def lookup_digests(self, query: np.ndarray) -> np.ndarray:
        at = np.searchsorted(self.keys, query)
        found = at < len(self.keys)
        found[found] = self.keys[at[found]] == query[found]
        return np.where(found, self.rows[np.minimum(at, len(self.keys) - 1)] if len(self.keys) else -1, -1)


class EmbeddingStore:
    """A finished embedding store: rows looked up by sequence hash (a cluster member's gives its representative's)."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        self.group = open_store(path, SCHEMA, required=("hash", "length", "embedding"))
        self.attrs = self.group.attrs.asdict()
        self.model: dict = self.attrs["model"]
        self.embedding = self.group["embedding"]
        self._hashes: np.ndarray | None = None
        self._index: HashIndex | None = None

    def __len__(self) -> int:
        return self.group["hash"].shape[0]

    @property
    def hashes(self) -> np.ndarray:
        """Every row's hash as a string, read on first use: about 80 bytes a row, which neither the index nor
        the corpus build needs (a million rows are 80 MB)."""
        if self._hashes is None:
            self._hashes = self.group["hash"][:]
        return self._hashes

    @functools.cached_property
    def lengths(self) -> np.ndarray:
        return self.group["length"][:]

    @functools.cached_property
    def alias_hashes(self) -> np.ndarray:
        """Hashes of the proteins without a row of their own (read on first use, like ``alias_rows``)."""
        return self.group["aliases/hash"][:] if "aliases" in self.group else np.zeros(0, dtype="S64")

    @functools.cached_property
    def alias_rows(self) -> np.ndarray:
        return self.group["aliases/row"][:] if "aliases" in self.group else np.zeros(0, np.int64)

    @property
    def n_aliases(self) -> int:
        return self.group["aliases/hash"].shape[0] if "aliases" in self.group else 0

    def hash_chunks(self, aliases: bool = False):
        """(first row, S64 hashes, int32 lengths) of consecutive stored chunks of the hash column, or with
        ``aliases`` (first alias, S64 hashes, int64 rows) of the alias columns: a column read without ever
        holding all of it."""
        if aliases and not self.n_aliases:
            return
        hashes, other = ((self.group["aliases/hash"], self.group["aliases/row"]) if aliases
                         else (self.group["hash"], self.group["length"]))
        step = hashes.chunks[0]
        for start in range(0, hashes.shape[0], step):
            part = hashes[start:start + step].astype("S64")
            yield start, part, other[start:start + len(part)]

    def fixed_hashes(self, dtype: str = "S64") -> np.ndarray:
        """Every row's hash, read chunk by chunk into fixed width: "S64" hex (64 bytes a row) or "S32" digests
        (32), never holding the whole column as variable-width strings."""
        out = np.empty(len(self), dtype=dtype)
        for start, part, _ in self.hash_chunks():
            out[start:start + len(part)] = digests(part) if dtype == "S32" else part
        return out

    @property
    def index(self) -> HashIndex:
        if self._index is None:
            keys = self.fixed_hashes("S32")   # 32 bytes a row: no string copy of the column at all
            if len(self.alias_hashes):
                keys = np.concatenate([keys, digests(self.alias_hashes.astype("S64"))])
            self._index = HashIndex(keys, np.concatenate([np.arange(len(self)), self.alias_rows]))
        return self._index

    def rows(self, hashes) -> np.ndarray:
        """The row of each hash (its own, or its representative's), -1 where the store has none."""
        return self.index.lookup(hashes)

    def read_rows(self, rows: np.ndarray) -> np.ndarray:
        """Embeddings of the given rows, in that order (read in row order, so chunk by chunk)."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.embedding.shape[1]), dtype=self.embedding.dtype)
        if len(rows):
            unique, inverse = np.unique(rows, return_inverse=True)
            out[:] = self.embedding.get_orthogonal_selection((unique, slice(None)))[inverse]
        return out

    def get(self, hashes: Sequence[str]) -> np.ndarray:
        """Embeddings of the given hashes, in that order; a missing hash is an error naming it."""
        rows = self.rows(hashes)
        if (rows < 0).any():
            missing = np.asarray(hashes, dtype=object)[rows < 0]
            raise GlmkitError(f"{self.path}: no embedding for protein {missing[0]}"
                              + (f" (and {len(missing) - 1:,} more)" if len(missing) > 1 else ""))
        return self.read_rows(rows)


@dataclass
class PlannedRows:
    """The hash and length columns and the aliases a ResumableEmbeddingWriter writes, given as consecutive
    pieces so that a plan over a large store never holds all its hashes: ``pieces()`` yields (S64 hashes,
    int32 lengths) and ``alias_pieces()`` (S64 hashes, int64 rows); each may be called more than once."""
    n: int
    n_aliases: int
    pieces: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]
    alias_pieces: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]

    @classmethod
    def in_memory(cls, hashes: Sequence[str], lengths: Sequence[int],
                  aliases: dict[str, int] | None = None) -> PlannedRows:
        """``aliases``: hash of a protein without a row of its own -> the row that stands for it."""
        hashes, lengths = np.asarray(hashes, dtype="S64"), np.asarray(lengths, dtype=np.int32)
        aliases = dict(sorted((aliases or {}).items()))
        alias_hashes = np.array(list(aliases), dtype="S64")
        alias_rows = np.array(list(aliases.values()), dtype=np.int64)
        return cls(len(hashes), len(aliases), lambda: [(hashes, lengths)], lambda: [(alias_hashes, alias_rows)])

    def fingerprint(self) -> str:
        """sha256 of every piece: one more pass over them, not a copy."""
        sha = hashlib.sha256()
        for pieces in (self.pieces(), self.alias_pieces()):
            for first, second in pieces:
                sha.update(np.ascontiguousarray(first, dtype="S64").tobytes())
                sha.update(np.ascontiguousarray(second, dtype=np.int64).tobytes())
            sha.update(b"|")
        return sha.hexdigest()


def _write_pieces(arrays: Sequence, pieces: Iterable[tuple], n: int) -> None:
    """Consecutive pieces of equally long columns written one whole stored chunk at a time (a string chunk
    written in parts would be read back and rewritten for each part)."""
    step, at, held = arrays[0].chunks[0], 0, []

    def flush(upto: int) -> int:
        parts = [np.concatenate(column) for column in zip(*held)]
        for array, part in zip(arrays, parts):
            array[at:at + upto] = part[:upto].astype(np.dtypes.StringDType()) if part.dtype.kind == "S" \
                else part[:upto]
        held[:] = [tuple(part[upto:] for part in parts)]
        return at + upto

    for piece in pieces:
        held.append(piece)
        size = sum(len(p[0]) for p in held)
        if size >= step:
            at = flush(size - size % step)
    size = sum(len(p[0]) for p in held)
    if size:
        at = flush(size)
    if at != n:
        raise ValueError(f"{at} rows written, {n} planned")


# what two embedding models must agree on for their embeddings to be used together
MODEL_IDENTITY = ("name", "sha256", "embed_dim", "layer", "max_residues", "long", "pooling")


def model_differences(a: dict, b: dict) -> list[str]:
    """The identity keys on which two embedding stores' models differ. A key either side does not know (None or
    absent: imported models and embeddings record what the user stated) is not compared."""
    return [k for k in MODEL_IDENTITY if a.get(k) is not None and b.get(k) is not None and a[k] != b[k]]


def require_same_model(trained_on: dict, embedding_path: str, where) -> None:
    """An embedding store must come from the ESM2 a model was trained on."""
    ours = EmbeddingStore(embedding_path).model
    differs = model_differences(trained_on, ours)
    if differs:
        key = differs[0]
        raise GlmkitError(f"{embedding_path}: embeddings from {ours.get('name')} ({key} {ours.get(key)}), but "
                          f"{where} was trained on {trained_on.get('name')} ({key} {trained_on.get(key)})")


class ResumableEmbeddingWriter:
    """Writes a planned store chunk by chunk; restarting with the same plan resumes it."""

    def __init__(self, final: str | Path, parameters: dict, inputs: Sequence, rows: PlannedRows,
                 dim: int, dtype: str, model: dict, chunk_rows: int, computation: dict | None = None):
        """``computation``: whatever else changes the rows' values (precision, device, batching), so that a run
        resumed with other settings starts over instead of mixing both."""
        self.final = Path(final)
        self.work = work_folder(self.final)
        self.chunk_rows = chunk_rows
        self.n = rows.n
        plan = hashlib.sha256((rows.fingerprint() + json.dumps([dim, dtype, model, chunk_rows, computation or {}],
                                                               sort_keys=True, default=str)).encode())
        plan = plan.hexdigest()
        self.group = self._resume(plan)
        if self.group is None:
            remove(self.work)
            self.group = create_store(self.work, SCHEMA, parameters, inputs)
            self.group.attrs.update({"model": model, "plan_sha256": plan})
            g = self.group
            columns = [new_array(g, "hash", shape=(self.n,), chunks=(HASH_CHUNK_ROWS,), dtype=np.dtypes.StringDType()),
                       new_array(g, "length", shape=(self.n,), chunks=(HASH_CHUNK_ROWS,), dtype=np.int32)]
            _write_pieces(columns, rows.pieces(), self.n)
            new_array(g, "embedding", shape=(self.n, dim), chunks=(max(chunk_rows, 1), dim), dtype=dtype)
            if rows.n_aliases:
                columns = [new_array(g, "aliases/hash", shape=(rows.n_aliases,), chunks=(HASH_CHUNK_ROWS,),
                                     dtype=np.dtypes.StringDType()),
                           new_array(g, "aliases/row", shape=(rows.n_aliases,), chunks=(HASH_CHUNK_ROWS,), dtype=np.int64)]
                _write_pieces(columns, rows.alias_pieces(), rows.n_aliases)
            # one flag per chunk, each its own file: set only after its chunk is fully written
            new_array(g, "chunk_done", shape=(self.n_chunks,), chunks=(1,), dtype=bool, fill_value=False)
        self.done = self.group["chunk_done"][:]

    @property
    def n_chunks(self) -> int:
        return -(-self.n // self.chunk_rows)

    def _resume(self, plan: str):
        clear_work_folder(self.work, keep=lambda: True)   # refuses what glmkit did not make; keeps the rest
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

    def discard_if_empty(self) -> None:
        if not self.done.any():
            remove(self.work)

    def publish(self, inputs: Sequence) -> None:
        assert self.done.all(), "publishing an unfinished store"
        del self.group["chunk_done"]
        finish_store(self.group, inputs)
        publish(self.work, self.final)


def write_embedding_store(path: str | Path, n: int, dim: int, chunks, model: dict, dtype: str = "float16",
                          chunk_rows: int = 4096, parameters: dict | None = None) -> None:
    """An embedding store written chunk by chunk from ``chunks``: (hashes, lengths, vectors) of consecutive rows,
    ``chunk_rows`` each (the last may be shorter). Memory: one chunk. For stores made by other means than `embed`
    (synthetic corpora, benchmarks); the rows must already be distinct."""
    group = create_store(path, SCHEMA, parameters or {}, [])
    group.attrs["model"] = model
    hashes = new_array(group, "hash", shape=(n,), chunks=(chunk_rows,), dtype=np.dtypes.StringDType())
    lengths = new_array(group, "length", shape=(n,), chunks=(chunk_rows,), dtype=np.int32)
    embedding = new_array(group, "embedding", shape=(n, dim), chunks=(chunk_rows, dim), dtype=dtype)
    at = 0
    for chunk_hashes, chunk_lengths, vectors in chunks:
        end = at + len(vectors)
        hashes[at:end] = np.asarray(chunk_hashes, dtype=np.dtypes.StringDType())
        lengths[at:end] = chunk_lengths
        embedding[at:end] = vectors
        at = end
    if at != n:
        raise ValueError(f"{path}: {at} rows written, {n} planned")
    finish_store(group)
