"""The Zarr store layer shared by every glmkit store.

Every store is a Zarr v3 group whose root attributes carry:

    schema          e.g. "glmkit.elements"
    schema_version  integer; a reader refuses versions newer than it knows
    glmkit_version  the glmkit that wrote it
    command_line    the full command line
    parameters      the command's parameters
    inputs          [{"path", "sha256"}] of every input read
    complete        true, written last; a store without it is unfinished

Columns are 1-D arrays appended in whole chunks. Ragged data (sequences) is a
flat uint8 array ``<name>/data`` plus int64 ``<name>/offsets`` (length n + 1).
docs/FORMATS.md is the authoritative description of each schema.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from glmkit import __version__
from glmkit.errors import GlmkitError
from glmkit.provenance import command_line

if TYPE_CHECKING:  # imported lazily at run time: see _zarr()
    import zarr

# schema name -> the version this glmkit writes (and the newest it reads)
SCHEMAS = {
    "glmkit.elements": 1,
    "glmkit.embeddings": 2,
    "glmkit.context": 1,
}
# what each schema is, for error messages that say what was expected
SCHEMA_TITLES = {
    "glmkit.elements": "an element store (from `glmkit call` or `glmkit filter`)",
    "glmkit.embeddings": "an embedding store (from `glmkit embed`)",
    "glmkit.context": "a context store (from `glmkit contextualize`)",
}

ROW_CHUNK = 1 << 16      # rows per chunk of a column
BYTE_CHUNK = 1 << 22     # bytes per chunk of ragged data
RAGGED = "ragged"        # column dtype marker for byte sequences


def _zarr():
    """zarr costs ~0.15 s to import; commands warm it in a background thread while they compute (see call.py)."""
    import zarr

    return zarr


def create_store(path: str | Path, schema: str, parameters: dict, inputs: Sequence) -> zarr.Group:
    """A new, empty store at ``path`` with its provenance attributes (``complete`` comes at ``finish``)."""
    group = _zarr().open_group(str(path), mode="w", zarr_format=3)
    group.attrs.update({
        "schema": schema,
        "schema_version": SCHEMAS[schema],
        "glmkit_version": __version__,
        "command_line": command_line(),
        "parameters": parameters,
        "inputs": [i.record() if hasattr(i, "record") else i for i in inputs],
    })
    return group


def finish_store(group: zarr.Group, inputs: Sequence | None = None, attributes: dict | None = None) -> None:
    """Mark a store complete, in one write with the last ``attributes`` and the input records (``inputs``:
    checksums are known only once the inputs have been read)."""
    final = {**(attributes or {}), "complete": True}
    if inputs is not None:
        final["inputs"] = [i.record() if hasattr(i, "record") else i for i in inputs]
    group.attrs.update(final)


def store_record(path: str | Path) -> dict:
    """Provenance of a store given as input: its path and a sha256 over all its files in path order."""
    root = Path(path)
    digest = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(f.relative_to(root)).encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return {"path": str(root.resolve()), "sha256": digest.hexdigest()}


def store_schema(path: str | Path) -> str | None:
    """The schema name of the glmkit store at ``path``, or None if it is not one (cheap: reads zarr.json only)."""
    import json

    try:
        return json.loads((Path(path) / "zarr.json").read_text()).get("attributes", {}).get("schema")
    except (OSError, ValueError):
        return None


def open_store(path: str | Path, schema: str) -> zarr.Group:
    """Open a finished store of ``schema`` or fail with a one-line error naming the file."""
    p = Path(path)
    expected = SCHEMA_TITLES.get(schema, schema)
    if not p.exists():
        raise GlmkitError(f"{path}: no such store; expected {expected}")
    if not (p / "zarr.json").is_file():
        raise GlmkitError(f"{path}: not a glmkit store (no zarr.json); expected {expected}")
    try:
        group = _zarr().open_group(str(p), mode="r", zarr_format=3)
    except Exception as e:  # zarr raises several types for a corrupt group
        raise GlmkitError(f"{path}: unreadable Zarr store ({e}); expected {expected}") from e
    attrs = group.attrs.asdict()
    found = attrs.get("schema")
    if found != schema:
        what = SCHEMA_TITLES.get(found, f"schema {found!r}" if found else "not a glmkit store")
        raise GlmkitError(f"{path}: is {what}; expected {expected}")
    version = attrs.get("schema_version")
    if not isinstance(version, int) or version > SCHEMAS[schema]:
        raise GlmkitError(f"{path}: {schema} schema version {version} is newer than this glmkit "
                          f"({__version__}) reads (up to {SCHEMAS[schema]}); upgrade glmkit")
    if not attrs.get("complete"):
        raise GlmkitError(f"{path}: unfinished store (the run that wrote it did not complete)")
    return group


class ColumnWriter:
    """Appends to a 1-D array, buffering so that every write but the last fills whole chunks.

    The array is created at the first write. A column that ends within its first
    chunk gets a chunk of exactly its length: zarr encodes every chunk at full
    size, and padding one contig's name to 65,536 strings costs more than the write.
    """

    def __init__(self, group: zarr.Group, name: str, dtype, chunk: int | None = None):
        self.group, self.name, self.dtype, self.chunk = group, name, dtype, chunk or ROW_CHUNK
        self.array: zarr.Array | None = None
        self._buffer: list[np.ndarray] = []
        self._buffered = 0

    def extend(self, values) -> None:
        values = np.asarray(values, dtype=object if self.dtype is str else self.dtype)
        if values.size:
            self._buffer.append(values)
            self._buffered += values.size
        if self._buffered >= self.chunk:
            _sync(self._flush(whole_chunks_only=True))

    async def _flush(self, whole_chunks_only: bool) -> None:
        if not self._buffered and self.array is not None:
            return
        data = np.concatenate(self._buffer) if self._buffer else np.zeros(0, dtype=self.dtype)
        n = (len(data) // self.chunk) * self.chunk if whole_chunks_only else len(data)
        rest = data[n:]
        self._buffer, self._buffered = ([rest] if rest.size else []), rest.size
        if self.array is None:
            chunk = self.chunk if whole_chunks_only else max(1, min(n, self.chunk))
            # write_empty_chunks: zarr otherwise compares every chunk with the fill value before writing it,
            # which for strings and sequences cost more than the write (~40 % of an element store's)
            # zstd level 1: on sequences as small as level 3's output (proteins: smaller) and 1.3-8x faster
            array = await _zarr().api.asynchronous.create_array(
                self.group.store, name=f"{self.group.path}/{self.name}".lstrip("/"), shape=(n,), chunks=(chunk,),
                dtype=self.dtype, zarr_format=3, compressors=_zarr().codecs.ZstdCodec(level=1),
                config={"write_empty_chunks": True})
            self.array = _zarr().Array(array)
            if n:
                await array.setitem(slice(None), data[:n])
        elif n:
            await self.array.async_array.append(data[:n])

    async def close_async(self) -> None:
        await self._flush(whole_chunks_only=False)

    def close(self) -> None:
        _sync(self.close_async())


class RaggedWriter:
    """Byte sequences as flat ``data`` (uint8) plus ``offsets`` (int64, starting at 0)."""

    def __init__(self, group: zarr.Group, name: str):
        sub = group.create_group(name)
        self.data = ColumnWriter(sub, "data", np.uint8, BYTE_CHUNK)
        self.offsets = ColumnWriter(sub, "offsets", np.int64)
        self.offsets.extend([0])
        self._end = 0

    def extend(self, values: Sequence[bytes]) -> None:
        if not len(values):
            return
        lengths = np.fromiter((len(v) for v in values), dtype=np.int64, count=len(values))
        self.offsets.extend(self._end + np.cumsum(lengths))
        self._end += int(lengths.sum())
        self.data.extend(np.frombuffer(b"".join(values), dtype=np.uint8))

    async def close_async(self) -> None:
        await asyncio.gather(self.data.close_async(), self.offsets.close_async())

    def close(self) -> None:
        _sync(self.close_async())


def close_writers(writers: Sequence[ColumnWriter | RaggedWriter]) -> None:
    """Close many writers in one round of concurrent writes.

    zarr spends milliseconds of Python on each array operation; run together in
    one event loop, the final writes of a store's ~30 columns overlap their file
    I/O and compression instead of queueing one after another.
    """
    async def close_all() -> None:
        await asyncio.gather(*(writer.close_async() for writer in writers))

    _sync(close_all())


def _sync(coroutine):
    """Run a zarr coroutine on zarr's own event loop thread (how zarr's synchronous API runs them)."""
    from zarr.core.sync import sync

    return sync(coroutine)


def read_ragged(group: zarr.Group, name: str, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of a ragged column, as an object array of bytes."""
    offsets = group[f"{name}/offsets"][start:stop + 1]
    data = group[f"{name}/data"][int(offsets[0]):int(offsets[-1])].tobytes() if len(offsets) else b""
    base = int(offsets[0]) if len(offsets) else 0
    out = np.empty(max(len(offsets) - 1, 0), dtype=object)
    for i in range(len(out)):
        out[i] = data[offsets[i] - base:offsets[i + 1] - base]
    return out


def read_column(group: zarr.Group, name: str, dtype, start: int, stop: int) -> np.ndarray:
    if dtype == RAGGED:
        return read_ragged(group, name, start, stop)
    values = group[name][start:stop]
    return values.astype(object) if dtype is str else values
