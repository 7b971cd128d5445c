"""The files of `glmkit dedup semantic` (docs/FORMATS.md, "Semantic deduplication").

- Input: the embeddings to deduplicate, from a context store (one per contig or
  per gene) or an embedding store (one per distinct protein), read chunk by chunk
  (EmbeddingSource).
- centroids: a Zarr store (schema glmkit.dedup-centroids) with the k x d
  spherical k-means centroids and the plan every later step must share (number
  of items, buckets, the input's checksum).
- An assignment share (``assign --shard K/N``): a folder of raw little-endian
  column files per bucket of clusters, appended chunk by chunk, and a
  manifest.json written last that records every file's size and crc32.
  Bucket b holds the items of clusters c with c % buckets == b, in input order.
- A prune share: a folder with rows.tsv (the final table's rows for its
  buckets, no header) and a manifest.json with its size and crc32, the items,
  pruned per threshold and a histogram of 1 - max similarity; the merge step
  concatenates shares in order.

Shares pass between processes (and jobs of a cluster), so everything in them
is checked when read: a manifest carries a sha256 of its own content, and
every file its size and crc32 (format version 2; version 1 shares, sizes
only, are still read).
"""

from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from glmkit.errors import GlmkitError
from glmkit.io.context import ContextStore
from glmkit.io.store import create_store, finish_store, new_array, open_store, store_record, store_schema

CENTROIDS_SCHEMA = "glmkit.dedup-centroids"
ASSIGN_FORMAT = "glmkit.dedup-assign"
PRUNE_FORMAT = "glmkit.dedup-prune"
FORMAT_VERSION = 2
ASSIGN_COLUMNS = {"row": "<i8", "cluster": "<i4"}   # + "vector" (input dtype, d per row) and "id" (text lines)
# 1 - max similarity is counted in these bins (log-spaced, with one bin below 1e-6): the remaining-fraction curve
HISTOGRAM_EDGES = np.concatenate([[0.0], np.logspace(-6, 0, 121), [np.inf]])


# -- the input --------------------------------------------------------------------------------------------------

class EmbeddingSource:
    """Embeddings with ids, read chunk by chunk: contigs or genes of a context store, rows of an embedding store."""

    def __init__(self, path: str, level: str = "contig"):
        self.path = path
        schema = store_schema(path)
        if schema == "glmkit.context":
            store = ContextStore(path)
            prefix = "contigs" if level == "contig" else "genes"
            self._ids = store.group[f"{prefix}/name" if level == "contig" else "genes/id"]
            self._vectors = store.group[f"{prefix}/embedding"]
        elif schema == "glmkit.embeddings":
            if level == "contig":
                raise GlmkitError(f"{path}: an embedding store holds proteins, not contigs; give --level gene")
            group = open_store(path, "glmkit.embeddings", required=("hash", "embedding"))  # hashes stay on disk
            self._ids, self._vectors = group["hash"], group["embedding"]
        else:
            raise GlmkitError(f"{path}: not a context store (glmkit contextualize) or an embedding store "
                              f"(glmkit embed)")
        self.n, self.dim = (int(x) for x in self._vectors.shape)
        self.dtype = np.dtype(self._vectors.dtype)
        self.chunk = int(self._vectors.chunks[0])
        if self.n == 0:
            raise GlmkitError(f"{path}: no embeddings to deduplicate")

    def record(self) -> dict:
        return store_record(self.path)

    def chunks(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(first row, ids, vectors) of rows start:stop, one stored chunk at a time."""
        stop = self.n if stop is None else stop
        at = start
        while at < stop:
            end = min(stop, (at // self.chunk + 1) * self.chunk)
            yield at, self._ids[at:end].astype(object), self._vectors[at:end]
            at = end

    def read_rows(self, rows: np.ndarray) -> np.ndarray:
        """Vectors of sorted, distinct rows."""
        out = np.empty((len(rows), self.dim), dtype=self.dtype)
        for at, vectors in self.iter_rows(rows):
            out[at] = vectors
        return out

    def iter_rows(self, rows: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(positions in ``rows``, their vectors) chunk by chunk, for sorted, distinct rows; only the chunks that
        hold one are read."""
        chunk_of = rows // self.chunk
        for c in np.unique(chunk_of):
            at = np.flatnonzero(chunk_of == c)
            lo = int(c) * self.chunk
            yield at, self._vectors[lo:min(self.n, lo + self.chunk)][rows[at] - lo]


# -- centroids ----------------------------------------------------------------------------------------------------

@dataclass
class Centroids:
    path: str
    centroids: np.ndarray             # (k, d) float32, unit length
    plan: dict                        # n, dim, level, buckets, input (record), clusters, sample, seed, iterations
    checksum: str
    coarse: np.ndarray | None = None          # two levels: (k1, d) coarse centroids ...
    cell_offsets: np.ndarray | None = None    # ... and (k1 + 1,): centroids[o[c]:o[c+1]] are cell c's


def write_centroids(path: Path, fitted: Centroids, parameters: dict, inputs: Sequence) -> None:
    group = create_store(path, CENTROIDS_SCHEMA, parameters, inputs)
    k, d = fitted.centroids.shape
    new_array(group, "centroids", data=fitted.centroids.astype(np.float32), chunks=(min(k, 4096), d))
    if fitted.coarse is not None:
        new_array(group, "coarse", data=fitted.coarse.astype(np.float32), chunks=fitted.coarse.shape)
        new_array(group, "cell_offsets", data=fitted.cell_offsets.astype(np.int64), chunks=fitted.cell_offsets.shape)
    finish_store(group, attributes={"plan": fitted.plan})


def read_centroids(path: str) -> Centroids:
    group = open_store(path, CENTROIDS_SCHEMA, required=("centroids",))
    two_level = "coarse" in group
    return Centroids(path, group["centroids"][:], group.attrs["plan"], store_record(path)["sha256"],
                     group["coarse"][:] if two_level else None, group["cell_offsets"][:] if two_level else None)


# -- assignment shares -------------------------------------------------------------------------------------------

def bucket_file(folder: Path, bucket: int, column: str) -> Path:
    return folder / f"b{bucket:05d}.{column}"


class AssignShareWriter:
    """Appends (row, cluster, vector, id) of items to their bucket's files; buffers a bounded amount."""

    def __init__(self, folder: Path, buckets: int, dim: int, dtype: np.dtype, buffer_bytes: int = 64 << 20):
        self.folder, self.buckets, self.dim, self.dtype = folder, buckets, dim, np.dtype(dtype)
        folder.mkdir(parents=True, exist_ok=True)
        self.counts = np.zeros(buckets, dtype=np.int64)
        self._crc: dict[str, int] = {}   # each file's crc32 so far: the manifest records it, readers check it
        self._pending: list[tuple] = []
        self._pending_bytes, self._buffer_bytes = 0, buffer_bytes

    def add(self, rows: np.ndarray, clusters: np.ndarray, vectors: np.ndarray, ids: np.ndarray) -> None:
        self._pending.append((rows, clusters, vectors, ids))
        self._pending_bytes += vectors.nbytes
        if self._pending_bytes >= self._buffer_bytes:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        rows, clusters, vectors, ids = (np.concatenate(parts) for parts in zip(*self._pending))
        self._pending, self._pending_bytes = [], 0
        bucket = clusters % self.buckets
        order = np.argsort(bucket, kind="stable")   # each bucket's items stay in input order
        bounds = np.searchsorted(bucket[order], np.arange(self.buckets + 1))
        for b in range(self.buckets):
            take = order[bounds[b]:bounds[b + 1]]
            if not len(take):
                continue
            self._append(b, "row", rows[take].astype("<i8").tobytes())
            self._append(b, "cluster", clusters[take].astype("<i4").tobytes())
            self._append(b, "vector", vectors[take].astype(self.dtype.newbyteorder("<")).tobytes())
            self._append(b, "id", ("\n".join(ids[take]) + "\n").encode())
            self.counts[b] += len(take)

    def _append(self, bucket: int, column: str, data: bytes) -> None:
        path = bucket_file(self.folder, bucket, column)
        with open(path, "ab") as fh:
            fh.write(data)
        self._crc[path.name] = zlib.crc32(data, self._crc.get(path.name, 0))

    def close(self, manifest: dict) -> None:
        self.flush()
        sizes = {f.name: f.stat().st_size for f in sorted(self.folder.glob("b*.*"))}
        write_manifest(self.folder, {"format": ASSIGN_FORMAT, "dim": self.dim, "dtype": self.dtype.str,
                                     "buckets": self.buckets, "counts": self.counts.tolist(), "files": sizes,
                                     "crc32": {name: self._crc[name] for name in sizes}, **manifest})


def _manifest_checksum(manifest: dict) -> str:
    return hashlib.sha256(json.dumps({k: v for k, v in manifest.items() if k != "sha256"},
                                     sort_keys=True).encode()).hexdigest()


def write_manifest(folder: Path, manifest: dict) -> None:
    """manifest.json, written last, with the sha256 of its own content."""
    manifest = {**manifest, "version": FORMAT_VERSION}
    (folder / "manifest.json").write_text(json.dumps({**manifest, "sha256": _manifest_checksum(manifest)}, indent=1))


def read_verified(folder: Path, name: str, manifest: dict) -> bytes:
    """A share's file, whole, after checking it against the crc32 its manifest recorded."""
    data = (folder / name).read_bytes()
    check_crc(folder / name, zlib.crc32(data), manifest)
    return data


def verify_file(folder: Path, name: str, manifest: dict) -> None:
    """read_verified for a file too large to hold: read in pieces, only to check it."""
    crc = 0
    with open(folder / name, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 24), b""):
            crc = zlib.crc32(block, crc)
    check_crc(folder / name, crc, manifest)


def check_crc(path: Path, crc: int, manifest: dict) -> None:
    """Refuse a share's file whose crc32 is not the one its manifest recorded."""
    recorded = manifest.get("crc32", {}).get(path.name)
    if recorded is not None and crc != recorded:
        raise GlmkitError(f"{path}: its content changed since it was written (crc32 differs from the manifest's): "
                          f"the share is damaged; rerun the step that wrote it")


def read_manifest(folder: str | Path, fmt: str) -> dict:
    """A share's manifest, after checking that every file it lists has the size it recorded."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except FileNotFoundError:
        raise GlmkitError(f"{folder}: no manifest.json: not a finished `glmkit dedup` share") from None
    except ValueError:
        raise GlmkitError(f"{folder}/manifest.json: not valid JSON") from None
    if manifest.get("format") != fmt:
        raise GlmkitError(f"{folder}: a {manifest.get('format', 'different')} folder, expected {fmt}")
    if manifest.get("version", 0) > FORMAT_VERSION:
        raise GlmkitError(f"{folder}: written by a newer glmkit (version {manifest['version']}); upgrade glmkit")
    if manifest.get("version", 0) >= 2 and manifest.get("sha256") != _manifest_checksum(manifest):
        raise GlmkitError(f"{folder}/manifest.json: its content changed since it was written (sha256 differs): the "
                          f"share is damaged; rerun the step that wrote it")
    for name, size in manifest.get("files", {}).items():
        path = folder / name
        actual = path.stat().st_size if path.exists() else None
        if actual != size:
            raise GlmkitError(f"{path}: {'missing' if actual is None else f'{actual} bytes'}, the manifest "
                              f"recorded {size}: the share is damaged; rerun the step that wrote it")
    return manifest


class BucketReader:
    """One bucket of clusters across every assignment share, in input order (shares in shard order)."""

    def __init__(self, shares: Sequence[tuple[Path, dict]], bucket: int):
        self.parts = [(folder, int(m["counts"][bucket])) for folder, m in shares if m["counts"][bucket]]
        self.manifests = {folder: m for folder, m in shares}
        self._verified: set[Path] = set()   # vector files checked in full before being mapped
        first = shares[0][1]
        self.dim, self.dtype = int(first["dim"]), np.dtype(first["dtype"])
        self.bucket = bucket
        self.size = sum(n for _, n in self.parts)
        self._starts = np.cumsum([0] + [n for _, n in self.parts])
        self._vectors: np.ndarray | None = None

    def load_vectors(self, most_bytes: int) -> bool:
        """Read the bucket's vectors into memory, file by file in one sequential pass, if they take at most
        ``most_bytes`` (the usual bucket: a few MB); a larger bucket (one huge cluster) stays on disk, read per
        request. Gathering each cluster's rows from the mapped file touched its pages once per cluster."""
        if not self.parts or self.size * self.dim * self.dtype.itemsize > most_bytes:
            return False
        self._vectors = np.concatenate([np.frombuffer(self._read(f, "vector"), dtype=self.dtype).reshape(n, self.dim)
                                        for f, n in self.parts])
        return True

    def _read(self, folder: Path, column: str) -> bytes:
        return read_verified(folder, bucket_file(folder, self.bucket, column).name, self.manifests[folder])

    def column(self, name: str) -> np.ndarray:
        dtype = ASSIGN_COLUMNS[name]
        parts = [np.frombuffer(self._read(f, name), dtype=dtype) for f, _ in self.parts]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)

    def ids(self) -> np.ndarray:
        parts = []
        for f, _ in self.parts:   # one id a line: split at "\n" only (str.splitlines also splits at U+2028 ...)
            parts.extend(self._read(f, "id").decode().split("\n")[:-1])
        return np.asarray(parts, dtype=object)

    def vectors(self, index: np.ndarray) -> np.ndarray:
        """Vectors of the given positions in the bucket (any order), from memory (load_vectors) or the files."""
        if self._vectors is not None:
            return self._vectors[index]
        out = np.empty((len(index), self.dim), dtype=self.dtype)
        part = np.searchsorted(self._starts, index, side="right") - 1
        for p in np.unique(part):
            at = np.flatnonzero(part == p)
            # mapped for this read only: pages of a mapping count in the process's RSS while it lasts
            folder, n = self.parts[p]
            if folder not in self._verified:
                verify_file(folder, bucket_file(folder, self.bucket, "vector").name, self.manifests[folder])
                self._verified.add(folder)
            vectors = np.memmap(bucket_file(folder, self.bucket, "vector"), dtype=self.dtype, mode="r",
                                shape=(n, self.dim))
            out[at] = vectors[index[at] - self._starts[p]]
            del vectors
        return out


# -- prune shares ------------------------------------------------------------------------------------------------

def write_prune_manifest(folder: Path, manifest: dict) -> None:
    crc, size = 0, 0
    with open(folder / "rows.tsv", "rb") as fh:
        for block in iter(lambda: fh.read(1 << 24), b""):
            crc, size = zlib.crc32(block, crc), size + len(block)
    write_manifest(folder, {"format": PRUNE_FORMAT, "files": {"rows.tsv": size}, "crc32": {"rows.tsv": crc},
                            **manifest})


def shares_in_order(folders: Sequence[str], fmt: str, what: str) -> list[tuple[Path, dict]]:
    """Every share of one N-way split, each once, sorted by K; an error names what is missing or extra."""
    shares = [(Path(f), read_manifest(f, fmt)) for f in folders]
    n = {m["shard"][1] for _, m in shares}
    if len(n) != 1:
        raise GlmkitError(f"{what} shares of different splits given (N = {', '.join(map(str, sorted(n)))})")
    total = n.pop()
    by_k: dict[int, tuple[Path, dict]] = {}
    for folder, m in shares:
        k = m["shard"][0]
        if k in by_k:
            raise GlmkitError(f"{folder} and {by_k[k][0]} are both {what} share {k}/{total}")
        by_k[k] = (folder, m)
    missing = [k for k in range(1, total + 1) if k not in by_k]
    if missing:
        raise GlmkitError(f"{what} share {missing[0]}/{total} is missing"
                          + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    plans = {json.dumps(m["plan"], sort_keys=True) for _, m in by_k.values()}
    if len(plans) != 1:
        raise GlmkitError(f"the {what} shares come from different inputs, centroids or options; rerun them together")
    return [by_k[k] for k in range(1, total + 1)]


def share_range(total: int, shard: tuple[int, int] | None, granule: int = 1) -> tuple[int, int]:
    """The K-th of N contiguous ranges of 0..total (all of it without a shard), cut at multiples of ``granule``."""
    if shard is None:
        return 0, total
    k, n = shard
    units = -(-total // granule)
    return min(total, (k - 1) * units // n * granule), min(total, k * units // n * granule)


# -- the final table, as `filter --keep` reads it ----------------------------------------------------------------

def read_dropped(path: str, column: str | None = None) -> tuple[set[str], int, str]:
    """(ids marked 0 in a keep column, rows read, the column used) of a `dedup semantic` table (or any TSV with an
    ``id`` column and 1/0 keep columns). Without ``column``, the table's only ``keep_*`` column."""
    from glmkit.io.files import InputFile
    from glmkit.io.tsv import read_tsv

    from glmkit.io.tsv import text_lines

    source = InputFile(path)
    header = next((line for _, line in text_lines(source) if line and not line.startswith("#")), "").split("\t")
    keep_columns = [c for c in header if c.startswith("keep")]
    if "id" not in header:
        raise GlmkitError(f"{source.display}: no 'id' column (expected the dedup.tsv of `glmkit dedup semantic`)")
    if column is None:
        if len(keep_columns) != 1:
            raise GlmkitError(f"{source.display}: {len(keep_columns) or 'no'} keep columns"
                              + (f" ({', '.join(keep_columns)}): choose one with --keep-column" if keep_columns else ""))
        column = keep_columns[0]
    elif column not in header:
        raise GlmkitError(f"{source.display}: no column '{column}' (keep columns: {', '.join(keep_columns) or 'none'})")
    dropped, n = set(), 0
    for n, row in enumerate(read_tsv(source, ("id", column)), 1):
        value = row[column]
        if value == "0":
            dropped.add(row["id"])
        elif value != "1":
            raise GlmkitError(f"{source.display}: row {n}: {column} is '{value}', expected 1 or 0")
    return dropped, n, column
