"""The Zarr store layer shared by every glmkit store.

Every store is a Zarr v3 group whose root attributes carry:

    schema          e.g. "glmkit.elements"
    schema_version  integer; a reader refuses versions newer than it knows
    glmkit_version  the glmkit that wrote it
    command_line    the full command line
    parameters      the command's parameters
    inputs          [{"path", "sha256"}] of every input read
    integrity       {"checksum": "crc32c", "arrays": {path: {"shape", "chunks", "bytes"}}}: the manifest
    complete        true, written last; a store without it is unfinished

Every chunk of every array is written (even one equal to the fill value) and
ends in a crc32c of its bytes (zarr's crc32c codec). A reader therefore knows
which chunks must exist and whether each is intact: a missing, truncated or
altered chunk is an error naming the store, the array and the chunk, never
data (zarr alone reads a missing chunk as the fill value). `validate_store`
checks a whole store. docs/FORMATS.md is the authoritative description.

Columns are 1-D arrays appended in whole chunks. Ragged data (sequences) is a
flat uint8 array ``<name>/data`` plus int64 ``<name>/offsets`` (length n + 1).
"""

from __future__ import annotations

import asyncio
import logging
import hashlib
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from glmkit import __version__
from glmkit.errors import GlmkitError
from glmkit.provenance import provenance

if TYPE_CHECKING:  # imported lazily at run time: see _zarr()
    import zarr

# schema name -> the version this glmkit writes (and the newest it reads)
log = logging.getLogger("glmkit")
SCHEMAS = {
    "glmkit.elements": 3,
    "glmkit.embeddings": 3,
    "glmkit.context": 2,
    "glmkit.glm-corpus": 1,
    "glmkit.glm2-corpus": 1,
    "glmkit.contacts": 1,
    "glmkit.dedup-centroids": 1,
}
# the first version of each schema whose stores always carry the integrity manifest: from it on, a store without
# one is damaged (its attribute removed: a missing chunk would read back as zeros); older ones are read unverified
MANIFEST_SINCE = {"glmkit.elements": 2, "glmkit.embeddings": 3, "glmkit.context": 2, "glmkit.glm-corpus": 1,
                  "glmkit.glm2-corpus": 1, "glmkit.contacts": 1, "glmkit.dedup-centroids": 1}
# what each schema is, for error messages that say what was expected
SCHEMA_TITLES = {
    "glmkit.elements": "an element store (from `glmkit call` or `glmkit filter`)",
    "glmkit.embeddings": "an embedding store (from `glmkit embed`)",
    "glmkit.context": "a context store (from `glmkit contextualize`)",
    "glmkit.glm-corpus": "a gLM corpus store (built by `glmkit pretrain`)",
    "glmkit.glm2-corpus": "a gLM2 token corpus store (built by `glmkit pretrain --arch glm2`)",
    "glmkit.contacts": "a contact map (from `glmkit jacobian`)",
    "glmkit.dedup-centroids": "dedup centroids (from `glmkit dedup fit`)",
}

ROW_CHUNK = 1 << 16      # rows per chunk of a column
BYTE_CHUNK = 1 << 22     # bytes per chunk of ragged data
RAGGED = "ragged"        # column dtype marker for byte sequences
CHECKSUM = "crc32c"


class DamagedStoreError(GlmkitError):
    """A store whose files do not hold what its writer recorded."""


def _zarr():
    """zarr costs ~0.15 s to import; commands warm it in a background thread while they compute (see call.py)."""
    import zarr

    return zarr


def array_options() -> dict:
    """How every glmkit array is created.

    zstd level 1: on sequences as small as level 3's output (proteins: smaller) and 1.3-8x faster; then a
    crc32c of the compressed bytes, so that damage is detected on read. write_empty_chunks: every chunk is
    written, so a chunk that is not there is missing (and zarr need not compare each chunk with the fill
    value, which for strings cost more than the write).
    """
    codecs = _zarr().codecs
    return {"compressors": (codecs.ZstdCodec(level=1), codecs.Crc32cCodec()), "config": {"write_empty_chunks": True}}


def new_array(group: zarr.Group, name: str, *, data=None, shape=None, chunks, dtype=None, fill_value=None):
    """An array of a store being written, with glmkit's codecs (see array_options)."""
    kwargs = dict(array_options(), chunks=chunks)
    if fill_value is not None:
        kwargs["fill_value"] = fill_value
    if data is not None:
        return group.create_array(name, data=data, **kwargs)
    return group.create_array(name, shape=shape, dtype=dtype, **kwargs)


def create_store(path: str | Path, schema: str, parameters: dict, inputs: Sequence) -> zarr.Group:
    """A new, empty store at ``path`` with its provenance attributes (``complete`` comes at ``finish``)."""
    group = _zarr().open_group(str(path), mode="w", zarr_format=3)
    group.attrs.update({"schema": schema, "schema_version": SCHEMAS[schema],
                        **provenance(parameters, inputs=[i.record() if hasattr(i, "record") else i for i in inputs])})
    return group


def _arrays_on_disk(root: Path) -> dict[str, dict]:
    """Every array under ``root``: its metadata and its chunk files (key -> bytes), from one walk of the folder."""
    arrays: dict[str, dict] = {}
    for folder, dirs, files in os.walk(root):
        if "zarr.json" not in files:
            continue
        meta = json.loads((Path(folder) / "zarr.json").read_text())
        if meta.get("node_type") != "array":
            continue
        dirs[:] = []  # an array holds no other node
        chunks = {}
        for cfolder, _, cfiles in os.walk(Path(folder) / "c"):
            for f in cfiles:
                full = Path(cfolder) / f
                chunks[str(full.relative_to(folder))] = full.stat().st_size
        arrays[str(Path(folder).relative_to(root))] = {"meta": meta, "chunks": chunks}
    return arrays


def _grid(meta: dict) -> list[str]:
    """The chunk keys an array must have: every chunk of its grid (glmkit writes even empty ones)."""
    shape = meta["shape"]
    chunks = meta["chunk_grid"]["configuration"]["chunk_shape"]
    counts = [-(-n // c) for n, c in zip(shape, chunks)]
    if not counts:
        return ["c"]
    keys = ["c"]
    for n in counts:
        keys = [f"{k}/{i}" for k in keys for i in range(n)]
    return keys


def finish_store(group: zarr.Group, inputs: Sequence | None = None, attributes: dict | None = None) -> None:
    """Mark a store complete, in one write with its manifest, the last ``attributes`` and the input records
    (``inputs``: checksums are known only once the inputs have been read)."""
    root = Path(str(group.store.root)) / group.path
    manifest = {}
    for path, array in sorted(_arrays_on_disk(root).items()):
        expected = _grid(array["meta"])
        missing = sorted(set(expected) - set(array["chunks"]))
        if missing:  # a writer bug, not bad input: never mark such a store complete
            raise RuntimeError(f"{root}: array {path} lacks chunk {missing[0]} at finish")
        manifest[path] = {"shape": array["meta"]["shape"], "chunks": len(expected),
                          "bytes": sum(array["chunks"].values())}
    final = {**(attributes or {}), "integrity": {"checksum": CHECKSUM, "arrays": manifest}, "complete": True}
    if inputs is not None:
        final["inputs"] = [i.record() if hasattr(i, "record") else i for i in inputs]
    group.attrs.update(final)


def store_record(path: str | Path) -> dict:
    """Provenance of a store given as input: its path and a checksum.

    A store with a manifest is identified by the sha256 of its root zarr.json,
    which holds the manifest (every array's shape, chunk count and bytes) and
    the command that wrote it; its chunks' contents are guarded by their
    crc32c. Reading a whole multi-gigabyte store to hash it would cost more than
    most commands that read it. Older stores: sha256 over all files.
    """
    root = Path(path)
    meta = root / "zarr.json"
    try:
        raw = meta.read_bytes()
        if json.loads(raw).get("attributes", {}).get("integrity"):
            return {"path": os.path.realpath(root), "sha256": hashlib.sha256(raw).hexdigest(), "of": "zarr.json"}
    except (OSError, ValueError, AttributeError):
        pass
    digest = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(f.relative_to(root)).encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return {"path": os.path.realpath(root), "sha256": digest.hexdigest()}


def require_distinct(paths: Sequence[str], what: str = "element store") -> None:
    """Refuse the same input named twice (the same path, a link to it, or a copy with the same checksum): every
    gene would come twice, under the same id."""
    seen: dict[str, str] = {}
    for path in paths:
        if path == "-" or not Path(path).exists():
            continue
        for key in {os.path.realpath(path), store_record(path)["sha256"] if Path(path).is_dir() else ""} - {""}:
            if key in seen:
                raise GlmkitError(f"{path}: the same {what} as {seen[key]}, given twice: each gene would come "
                                  f"twice under one id; name each input once")
            seen[key] = path


def store_schema(path: str | Path) -> str | None:
    """The schema name of the glmkit store at ``path``, or None if it is not one (cheap: reads zarr.json only)."""
    try:
        return json.loads((Path(path) / "zarr.json").read_text()).get("attributes", {}).get("schema")
    except (OSError, ValueError, AttributeError):
        return None


def built_from(path: str | Path, schema: str, store_class, parameters: dict) -> bool:
    """Whether ``path`` holds a finished ``schema`` store (opened by ``store_class``) built with these very
    ``parameters``: what reusing a derived store (a corpus) rests on."""
    if store_schema(path) != schema:
        return False
    try:
        return store_class(path).attrs.get("parameters") == parameters
    except GlmkitError:
        return False


def reuse_or_build(path: Path, schema: str, store_class, parameters: dict, build, force: bool = True,
                   inputs: Sequence = (), what: str = "store", kind: str = "store", option: str | None = None):
    """The derived store at ``path`` (a corpus) if it is a ``schema`` store built from these very ``parameters``;
    else ``build(temporary path)``, published whole over it. Only a store of that schema is ever replaced (a
    user's folder of that name is refused), and one built from other inputs only with ``force``. Messages name
    it as ``what`` (e.g. "gLM corpus store") or ``kind`` ("corpus store"), and the ``option`` that chose it."""
    from glmkit.io.files import atomic_outputs

    path = Path(path)
    if built_from(path, schema, store_class, parameters):
        log.info(f"reusing the {kind} {path}")
        return store_class(path)
    if path.exists() or path.is_symlink():
        elsewhere = f": name another {option}" if option else ""
        if path.is_symlink() or store_schema(path) != schema:
            raise GlmkitError(f"{path}: exists and is not a {what}; glmkit will not replace it{elsewhere}")
        if not force:
            raise GlmkitError(f"{path}: a {kind} built from other inputs; use --force to rebuild it"
                              + (f", or name another {option}" if option else ""))
        log.info(f"{path} was built from other inputs: rebuilding it")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_outputs([str(path)], force=True, inputs=list(inputs)) as (tmp,):
        build(tmp)
    return store_class(path)


def _chunk_problem(data) -> str | None:
    """Why a chunk's bytes (any buffer) are not what its writer wrote, or None: its crc32c trailer, as zarr's codec
    writes it (little-endian uint32 of the bytes before it)."""
    import google_crc32c

    view = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    if len(view) < 4:
        return "truncated"
    if google_crc32c.value(view[:-4]) != int.from_bytes(view[-4:].tobytes(), "little"):
        return "damaged (checksum mismatch)"
    return None


def _verified_store_class():
    """zarr's LocalStore, made strict for reading finished stores (defined lazily: zarr is imported lazily)."""
    from zarr.storage import LocalStore

    class VerifiedStore(LocalStore):
        """A missing chunk, or one whose crc32c does not match, is a DamagedStoreError naming it."""

        def __init__(self, root: Path, display: str):
            super().__init__(root, read_only=True)
            self.display = display

        async def get(self, key, prototype=None, byte_range=None):
            buffer = await super().get(key, prototype, byte_range)
            if key.endswith("zarr.json") or "/c/" not in f"/{key}":
                return buffer
            array, _, chunk = f"/{key}".rpartition("/c/")
            if buffer is None:
                raise DamagedStoreError(f"{self.display}: array {array.strip('/')}: chunk {chunk} is missing "
                                        f"(the store is damaged; `glmkit validate` checks all of it)")
            if byte_range is None:
                problem = _chunk_problem(buffer.as_numpy_array())  # no copy
                if problem:
                    raise DamagedStoreError(f"{self.display}: array {array.strip('/')}: chunk {chunk} is {problem}")
            return buffer

    return VerifiedStore


_VERIFIED = None


def verified_store(root: str | Path, display: str):
    """A read-only zarr store over ``root`` whose reads fail, naming the chunk, on a missing or damaged chunk."""
    global _VERIFIED
    if _VERIFIED is None:
        _VERIFIED = _verified_store_class()
    return _VERIFIED(Path(root), display)


def open_store(path: str | Path, schema: str, required: Sequence[str] = ()) -> zarr.Group:
    """Open a finished store of ``schema`` or fail with a one-line error naming the file.

    Reads go through a verifying store: a missing or damaged chunk is an error naming it. ``required``:
    arrays the reader needs; with the manifest, every array it lists must be there too.
    """
    p = Path(path)
    expected = SCHEMA_TITLES.get(schema, schema)
    if not p.exists():
        raise GlmkitError(f"{path}: no such store; expected {expected}")
    if not (p / "zarr.json").is_file():
        raise GlmkitError(f"{path}: not a glmkit store (no zarr.json); expected {expected}")
    try:
        attrs = json.loads((p / "zarr.json").read_text()).get("attributes", {})
        if not isinstance(attrs, dict):
            raise ValueError("attributes are not an object")
    except (OSError, ValueError, AttributeError) as e:
        raise GlmkitError(f"{path}: unreadable store metadata ({e}); expected {expected}") from None
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
    manifest = attrs.get("integrity", {}).get("arrays", {}) if isinstance(attrs.get("integrity"), dict) else {}
    if not manifest and version >= MANIFEST_SINCE[schema]:
        raise DamagedStoreError(f"{path}: no integrity manifest, which every {schema} store of version {version} "
                                f"carries (the store is damaged); rebuild it")
    for name in sorted({*required, *manifest}):
        if not (p / name / "zarr.json").is_file():
            raise DamagedStoreError(f"{path}: array {name} is missing (the store is damaged)")
    store = verified_store(p, str(path)) if manifest else None
    try:
        return _zarr().open_group(store if store is not None else str(p), mode="r", zarr_format=3)
    except Exception as e:  # zarr raises several types for a corrupt group
        raise GlmkitError(f"{path}: unreadable Zarr store ({e}); expected {expected}") from e


def validate_store(path: str | Path) -> dict:
    """Check a whole store: schema, manifest, every chunk present and intact, and the store's own invariants.

    Returns {"schema", "arrays", "chunks", "bytes", "seconds"}; raises DamagedStoreError (or GlmkitError) on
    the first problem, naming it.
    """
    started = time.perf_counter()
    p = Path(path)
    schema = store_schema(p)
    if schema not in SCHEMAS:
        raise GlmkitError(f"{path}: not a glmkit store" + (f" (schema {schema!r})" if schema else ""))
    group = open_store(p, schema)
    manifest = group.attrs.get("integrity", {}).get("arrays")
    if manifest is None:
        raise DamagedStoreError(f"{path}: written before glmkit recorded manifests: it cannot prove it is whole")
    on_disk = _arrays_on_disk(p)
    extra = sorted(set(on_disk) - set(manifest))
    if extra:
        raise DamagedStoreError(f"{path}: array {extra[0]} is not in the store's manifest")
    n_chunks = n_bytes = 0
    for name, recorded in sorted(manifest.items()):
        array = on_disk[name]
        if array["meta"]["shape"] != recorded["shape"]:
            raise DamagedStoreError(f"{path}: array {name}: shape {array['meta']['shape']}, the manifest says "
                                    f"{recorded['shape']}")
        for key in _grid(array["meta"]):
            if key not in array["chunks"]:
                raise DamagedStoreError(f"{path}: array {name}: chunk {key[2:]} is missing")
            problem = _chunk_problem((p / name / key).read_bytes())
            if problem:
                raise DamagedStoreError(f"{path}: array {name}: chunk {key[2:]} is {problem}")
        size = sum(array["chunks"].values())
        if size != recorded["bytes"]:
            raise DamagedStoreError(f"{path}: array {name}: {size:,} bytes of chunks, the manifest says "
                                    f"{recorded['bytes']:,}")
        n_chunks, n_bytes = n_chunks + len(array["chunks"]), n_bytes + size
    _check_invariants(p, schema, group)
    return {"schema": schema, "arrays": len(manifest), "chunks": n_chunks, "bytes": n_bytes,
            "seconds": time.perf_counter() - started}


def _check_invariants(path: Path, schema: str, group: zarr.Group) -> None:
    """What each schema promises beyond its bytes: offsets that start at 0, never decrease and end at the data."""
    def offsets_ok(name: str, end: int) -> None:
        offsets = group[name][:]
        if not len(offsets) or offsets[0] != 0 or (np.diff(offsets) < 0).any() or offsets[-1] != end:
            raise DamagedStoreError(f"{path}: array {name} is not a valid offset table (0 .. {end:,}, increasing)")

    for node in _ragged_groups(group):
        offsets_ok(f"{node}/offsets", group[f"{node}/data"].shape[0])
    if schema == "glmkit.elements":
        offsets_ok("contigs/offsets", group["elements/id"].shape[0])
    elif schema == "glmkit.context" and "attention" in group:
        offsets_ok("attention/offsets", group["attention/data"].shape[0])


def _ragged_groups(group: zarr.Group) -> list[str]:
    out = []
    for prefix in ("contigs", "elements"):
        if prefix in group:
            for name, node in group[prefix].groups():
                if "offsets" in node and "data" in node:
                    out.append(f"{prefix}/{name}")
    return out


class ColumnWriter:
    """Appends rows to an array, buffering so that every write but the last fills whole chunks.

    A column is 1-D; with ``row_shape`` each row is an array of that shape (an
    (n, dim) embedding table). The array is created at the first write. A
    column that ends within its first chunk gets a chunk of exactly its length:
    zarr encodes every chunk at full size, and padding one contig's name to
    65,536 strings costs more than the write.
    """

    def __init__(self, group: zarr.Group, name: str, dtype, chunk: int | None = None, row_shape: tuple = ()):
        self.group, self.name, self.dtype, self.chunk = group, name, dtype, chunk or ROW_CHUNK
        self.row_shape = tuple(row_shape)
        self.array: zarr.Array | None = None
        self._buffer: list[np.ndarray] = []
        self._buffered = 0
        self.rows = 0  # rows written or buffered so far

    def extend(self, values) -> None:
        values = np.asarray(values, dtype=object if self.dtype is str else self.dtype)
        if self.row_shape:
            values = values.reshape(-1, *self.row_shape)
        if len(values):
            self._buffer.append(values)
            self._buffered += len(values)
            self.rows += len(values)
        if self._buffered >= self.chunk:
            _sync(self._flush(whole_chunks_only=True))

    async def _flush(self, whole_chunks_only: bool) -> None:
        if not self._buffered and self.array is not None:
            return
        data = np.concatenate(self._buffer) if self._buffer else np.zeros((0, *self.row_shape), dtype=self.dtype)
        n = (len(data) // self.chunk) * self.chunk if whole_chunks_only else len(data)
        rest = data[n:]
        self._buffer, self._buffered = ([rest] if len(rest) else []), len(rest)
        if self.array is None:
            chunk = self.chunk if whole_chunks_only else max(1, min(n, self.chunk))
            array = await _zarr().api.asynchronous.create_array(
                self.group.store, name=f"{self.group.path}/{self.name}".lstrip("/"), shape=(n, *self.row_shape),
                chunks=(chunk, *self.row_shape), dtype=self.dtype, zarr_format=3, **array_options())
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


# -- rows of a large array in another order, in bounded memory ------------------------------------------------

def gather_rows(source: zarr.Array, take: np.ndarray, emit, block_rows: int, workdir: Path,
                budget: int = 64 << 20) -> None:
    """Rows ``source[take]`` handed to ``emit(start, block)`` in order, ``block_rows`` at a time.

    ``source`` is read once, chunk by chunk, in its own order (chunks no row is
    taken from are skipped); each row goes to the block of its destination, in
    memory up to ``budget`` bytes and then in one spill file per block under
    ``workdir``. Blocks are then assembled in order. Time and I/O are linear in
    the rows, memory is the budget plus 16 bytes per row of ``take``: whatever
    order ``take`` has (an embedding store sorted by protein length, shards in
    hash order), the output is written sequentially.
    """
    take = np.asarray(take, dtype=np.int64)
    order = np.argsort(take, kind="stable")
    taken = take[order]
    row_shape, dtype = source.shape[1:], source.dtype
    row_bytes = int(np.prod(row_shape, dtype=np.int64)) * dtype.itemsize
    n_blocks = -(-len(take) // block_rows)
    held: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
    held_bytes = 0
    workdir.mkdir(parents=True, exist_ok=True)

    def spill() -> None:
        nonlocal held_bytes
        for b, parts in held.items():
            with open(workdir / f"block-{b}.pos", "ab") as pos_file, open(workdir / f"block-{b}.rows", "ab") as rows_file:
                for positions, values in parts:
                    pos_file.write(positions.tobytes())
                    rows_file.write(np.ascontiguousarray(values).tobytes())
        held.clear()
        held_bytes = 0

    chunk = source.chunks[0]
    for c0 in range(0, source.shape[0], chunk):
        lo, hi = np.searchsorted(taken, [c0, c0 + chunk])
        if lo == hi:
            continue
        values = source[c0:c0 + chunk][taken[lo:hi] - c0]
        positions = order[lo:hi]
        blocks = positions // block_rows
        by_block = np.argsort(blocks, kind="stable")
        bounds = np.flatnonzero(np.diff(blocks[by_block])) + 1
        for group in np.split(by_block, bounds):
            held.setdefault(int(blocks[group[0]]), []).append((positions[group], values[group]))
            held_bytes += len(group) * (row_bytes + 8)
        if held_bytes > budget:
            spill()
    for b in range(n_blocks):
        start = b * block_rows
        block = np.empty((min(block_rows, len(take) - start), *row_shape), dtype=dtype)
        pos_file, rows_file = workdir / f"block-{b}.pos", workdir / f"block-{b}.rows"
        if pos_file.exists():
            positions = np.fromfile(pos_file, dtype=np.int64)
            block[positions - start] = np.fromfile(rows_file, dtype=dtype).reshape(-1, *row_shape)
            pos_file.unlink()
            rows_file.unlink()
        for positions, values in held.pop(b, []):
            block[positions - start] = values
        emit(start, block)
