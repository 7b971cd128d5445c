#!/usr/bin/env python3
"""Benchmark: how memory and time of pretrain, contextualize and embed grow with the corpus.

    python bench/scale.py [--sizes 10000 100000 1000000] [--steps 300] [--out bench/out/scale]

For each size n (distinct proteins = genes): a synthetic element store of
contigs of 15-300 genes (log-uniform, so that filter-style sub-contigs and
their real mix of lengths arise) whose every CDS is a distinct protein, and an
embedding store of n x 1,280 float16 rows in an order unrelated to the
corpus's (as a length-sorted or sharded store is), both written chunk by chunk
so that building them is itself bounded. Then, each in its own process, with
peak RSS from the kernel (ru_maxrss of the child):

- `glmkit pretrain` (the tiny preset: the model is the same at every size, so
  what grows is the data path) for --steps steps: corpus store built (index
  and the embeddings copied into gene order), the split, the streaming
  normalisation fit, training; genes/s after the first 10 steps and the share
  of that time the loop waited for data;
- `glmkit contextualize` of the whole corpus with that model: genes/s;
- `glmkit embed` extending the n-row store by 100 new proteins (planning reads
  the stored hashes chunk by chunk, holding none of them): peak RSS.

Plus, in this process, the once-per-corpus steps on their own up to 10^6
sub-contigs: packing (glmkit.data.stream.pack_rows) and choosing the split.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DIM = 1280


def _protein(i: int) -> bytes:
    """A distinct 40-residue protein per i (its hash is what matters here)."""
    digest = hashlib.sha256(str(i).encode()).digest() + hashlib.sha256(str(-i).encode()).digest()
    return bytes(b"ACDEFGHIKLMNPQRSTVWY"[x % 20] for x in digest[:40])


def build(n: int, out: Path) -> tuple[Path, Path]:
    from glmkit.io.elements import CONTIG_COLUMNS, ELEMENT_COLUMNS, ElementBatch, ElementStoreWriter, column_array
    from glmkit.io.embeddings import PlannedRows, ResumableEmbeddingWriter, sequence_hash

    elements, embeddings = out / "elements.zarr", out / "embeddings.zarr"
    if elements.exists() and embeddings.exists():
        return elements, embeddings
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(n)
    writer = ElementStoreWriter(elements, {"synthetic": n}, [])
    gene, contig = 0, 0
    while gene < n:
        cols = {k: [] for k in ELEMENT_COLUMNS}
        contigs = {k: [] for k in CONTIG_COLUMNS}
        counts = []
        while gene < n and len(cols["id"]) < 200_000:
            genes = min(int(10 ** rng.uniform(np.log10(15), np.log10(300))), n - gene)
            name = f"c{contig}"
            for k, v in (("name", name), ("length", genes * 150), ("source", name), ("source_start", 1),
                         ("source_end", genes * 150), ("model", "synthetic"), ("translation_table", 11)):
                contigs[k].append(v)
            for g in range(genes):
                aa = _protein(gene + g)
                for k, v in (("id", f"{name}_{g + 1}"), ("type", 0), ("strand", 1 if (gene + g) % 3 else -1),
                             ("start", g * 150 + 1), ("end", g * 150 + 123), ("partial_left", False),
                             ("partial_right", False), ("translation_table", 11), ("start_type", "ATG"),
                             ("rbs_motif", ""), ("rbs_spacer", ""), ("nt", b"A" * 123), ("aa", aa)):
                    cols[k].append(v)
                for k in ("gc_content", "confidence", "score", "cscore", "sscore", "rscore", "uscore", "tscore"):
                    cols[k].append(0.0)
            counts.append(genes)
            gene += genes
            contig += 1
        writer.write(ElementBatch({k: column_array(v, CONTIG_COLUMNS[k]) for k, v in contigs.items()},
                                  {k: column_array(v, ELEMENT_COLUMNS[k]) for k, v in cols.items()},
                                  np.array(counts, dtype=np.int64)))
    writer.close()
    order = rng.permutation(n)  # the embedding store's rows in an order unrelated to the corpus
    # the ESM2 that extends the store below (its checksum is not known here: null matches it)
    model = {"name": "esm_t1_1280", "sha256": None, "embed_dim": DIM, "layer": 1, "max_residues": 1022,
             "long": "truncate", "pooling": "mean", "num_layers": 1, "attention_heads": 1, "source": "random"}

    def pieces(step: int = 1 << 16):   # the hash column made piece by piece: no list of n hashes
        for start in range(0, n, step):
            rows = order[start:start + step]
            yield np.array([sequence_hash(_protein(int(i))) for i in rows], dtype="S64"), np.full(len(rows), 40)
    planned = PlannedRows(n, 0, pieces, lambda: [])
    store = ResumableEmbeddingWriter(embeddings, {}, [], planned, DIM, "float16", model, 1024)
    for k in store.pending():
        rows = store.rows(k)
        store.write_chunk(k, rng.normal(size=(len(rows), DIM)).astype(np.float16))
    store.publish([])
    return elements, embeddings


def measured(cmd: list) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of a command run in a child process."""
    started = time.perf_counter()
    code = ("import resource, subprocess, sys\n"
            "r = subprocess.run(sys.argv[1:])\n"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
            "sys.exit(r.returncode)")
    result = subprocess.run([sys.executable, "-c", code, *map(str, cmd)], capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{result.stderr[-2000:]}")
    return int(result.stderr.strip().splitlines()[-1]) / 1024, time.perf_counter() - started


def training_speed(log: Path, skip: int = 10) -> tuple[float, float]:
    """Genes/s of training steps and the share of that time waiting for data, from log.tsv: the first ``skip``
    rows (allocation, caches) and the last (it includes the final validation, which grows with the corpus's
    validation split) left out."""
    rows = [line.split("\t") for line in log.read_text().splitlines()]
    col = {name: i for i, name in enumerate(rows[0])}
    seconds = np.diff([0.0] + [float(r[col["seconds"]]) for r in rows[1:]])[skip:-1]
    genes = np.array([float(r[col["genes_per_s"]]) for r in rows[1:]])[skip:-1] * seconds
    wait = np.array([float(r[col["data_wait"]]) for r in rows[1:]])[skip:-1] * seconds
    return genes.sum() / seconds.sum(), wait.sum() / seconds.sum()


def tiny_esm(path: Path) -> Path:
    from glmkit.models.esm2.weights import write_random_esm2

    if not path.exists():
        write_random_esm2(path, 1, DIM, 20)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "scale")
    args = parser.parse_args()
    glmkit = [sys.executable, "-m", "glmkit"]
    rows = []
    for n in args.sizes:
        folder = args.out / str(n)
        t = time.perf_counter()
        elements, embeddings = build(n, folder)
        built = time.perf_counter() - t
        pre_rss, pre_s = measured([*glmkit, "pretrain", elements, "-e", embeddings, "-o", folder / "glm", "--force",
                                   "-q", "--preset", "tiny", "--max-steps", args.steps, "--batch-size", 32,
                                   "--log-every", 1, "--val-every", 10 ** 9, "--checkpoint-every", 10 ** 9,
                                   "--threads", args.threads])
        speed, wait = training_speed(folder / "glm" / "log.tsv")
        ctx_rss, ctx_s = measured([*glmkit, "contextualize", elements, "-e", embeddings, "-m", folder / "glm", "-o",
                                   folder / "ctx.zarr", "--force", "-q", "--threads", args.threads])
        (folder / "new.faa").write_text("".join(f">new{i}\n{_protein(-1 - i).decode()}\n" for i in range(100)))
        emb_rss, emb_s = measured([*glmkit, "embed", embeddings, folder / "new.faa", "-o", folder / "extended.zarr",
                                   "-m", tiny_esm(args.out / "esm_t1_1280.pt"), "--force", "-q", "--dtype", "float16",
                                   "--threads", args.threads])
        rows.append((n, built, pre_rss, pre_s, speed, wait, ctx_rss, n / ctx_s, emb_rss, emb_s))
        print(f"{n:>9,} proteins: built in {built:.0f} s; pretrain {pre_rss:,.0f} MB {pre_s:.0f} s {speed:,.0f} genes/s "
              f"(data wait {wait:.1%}); contextualize {ctx_rss:,.0f} MB {n / ctx_s:,.0f} genes/s; embed extend "
              f"{emb_rss:,.0f} MB {emb_s:.0f} s", flush=True)

    print(f"\n{'proteins':>10}{'pretrain MB':>13}{'pretrain s':>12}{'genes/s':>9}{'wait':>7}{'context MB':>12}"
          f"{'genes/s':>9}{'embed MB':>10}{'embed s':>9}")
    for n, built, pre_rss, pre_s, speed, wait, ctx_rss, ctx_speed, emb_rss, emb_s in rows:
        print(f"{n:>10,}{pre_rss:>13,.0f}{pre_s:>12.0f}{speed:>9,.0f}{wait:>7.1%}{ctx_rss:>12,.0f}{ctx_speed:>9,.0f}"
              f"{emb_rss:>10,.0f}{emb_s:>9.0f}")
    first, last = rows[0], rows[-1]
    print(f"largest / smallest: pretrain RSS {last[2] / first[2]:.2f}x, training genes/s {last[4] / first[4]:.2f}x, "
          f"contextualize RSS {last[6] / first[6]:.2f}x and genes/s {last[7] / first[7]:.2f}x, embed RSS "
          f"{last[8] / first[8]:.2f}x")

    from glmkit.data.stream import pack_rows

    print("\nonce-per-corpus steps (this process):")
    for n in (10_000, 100_000, 1_000_000):
        lengths = np.random.default_rng(0).integers(15, 31, n)
        t = time.perf_counter()
        pack_rows(lengths, 30)
        print(f"  pack_rows {n:>9,} sub-contigs: {time.perf_counter() - t:6.2f} s")
    print(f"  peak RSS of this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("GLMKIT_PROGRESS_SECONDS", "3600")
    sys.exit(main())
