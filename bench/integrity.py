#!/usr/bin/env python3
"""Benchmark: what glmkit's store integrity checks cost on a large store.

    python bench/integrity.py [--rows 200000] [--dim 1280] [--out bench/out/integrity]

Builds an embedding store of --rows x --dim float16 (random values: compressed
size is what a real store's would be, near incompressible), chunk by chunk with
glmkit's own writer, then reads every row four ways, alternating, best of 3: the same array without
checksums (glmkit's layout before integrity checks), plain zarr on glmkit's
store (its crc32c codec checks each chunk; a missing chunk would still read as
zeros), glmkit's verifying reader (a missing chunk is an error; a damaged one an
error naming it), and `glmkit validate` (every chunk file read and checked,
manifest and offsets).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def build(path: Path, rows: int, dim: int, chunk_rows: int) -> None:
    from glmkit.io.embeddings import PlannedRows, ResumableEmbeddingWriter

    hashes = [f"{i:064x}" for i in range(rows)]
    model = {"name": "bench", "embed_dim": dim, "layer": 1}
    planned = PlannedRows.in_memory(hashes, [100] * rows)
    writer = ResumableEmbeddingWriter(path, {}, [], planned, dim, "float16", model, chunk_rows)
    rng = np.random.default_rng(0)
    for k in writer.pending():
        r = writer.rows(k)
        writer.write_chunk(k, rng.normal(size=(len(r), dim)).astype(np.float16))
    writer.publish([])


def without_checksums(source: Path, dest: Path) -> None:
    """The same embeddings as glmkit stored them before integrity checks: zstd only, no crc32c."""
    import zarr

    array = zarr.open_group(str(source), mode="r")["embedding"]
    out = zarr.open_group(str(dest), mode="w").create_array(
        "embedding", shape=array.shape, chunks=array.chunks, dtype=array.dtype,
        compressors=zarr.codecs.ZstdCodec(level=1), config={"write_empty_chunks": True})
    step = array.chunks[0] * 16
    for start in range(0, array.shape[0], step):
        out[start:start + step] = array[start:start + step]


def read_all(group) -> float:
    t = time.perf_counter()
    array = group["embedding"]
    step = array.chunks[0] * 16
    total = 0.0
    for start in range(0, array.shape[0], step):
        total += float(array[start:start + step, 0].astype(np.float32).sum())
    return time.perf_counter() - t


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--chunk-rows", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "integrity")
    args = parser.parse_args()
    import zarr

    from glmkit.io.store import open_store

    args.out.mkdir(parents=True, exist_ok=True)
    store = args.out / f"emb_{args.rows}x{args.dim}.zarr"
    if not store.exists():
        t = time.perf_counter()
        build(store, args.rows, args.dim, args.chunk_rows)
        print(f"built {store} in {time.perf_counter() - t:.1f} s")
    baseline = args.out / f"emb_{args.rows}x{args.dim}_no_checksums.zarr"
    if not baseline.exists():
        without_checksums(store, baseline)
    size = sum(f.stat().st_size for f in store.rglob("*") if f.is_file())
    glmkit = shutil.which("glmkit") or sys.exit("glmkit not on PATH: pip install .")
    bare = plain = verified = validate = float("inf")
    for _ in range(args.repeats):
        bare = min(bare, read_all(zarr.open_group(str(baseline), mode="r")))
        plain = min(plain, read_all(zarr.open_group(str(store), mode="r")))
        verified = min(verified, read_all(open_store(store, "glmkit.embeddings")))
        t = time.perf_counter()
        subprocess.run([glmkit, "validate", str(store), "-q"], check=True, stdout=subprocess.DEVNULL)
        validate = min(validate, time.perf_counter() - t)
    print(f"embedding store {args.rows:,} x {args.dim} float16, chunks of {args.chunk_rows} rows: "
          f"{size / 1e6:,.0f} MB on disk; best of {args.repeats}")
    print(f"  read every chunk, no checksums (as before)    {bare:7.2f} s")
    print(f"  read every chunk, plain zarr (crc32c codec)   {plain:7.2f} s   {plain / bare - 1:+.1%}")
    print(f"  read every chunk, glmkit (+ presence, names)  {verified:7.2f} s   {verified / bare - 1:+.1%}")
    print(f"  glmkit validate (whole store, new process)    {validate:7.2f} s   {size / 1e6 / validate:,.0f} MB/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
