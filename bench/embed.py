#!/usr/bin/env python3
"""Benchmark: glmkit embed vs fair-esm's extractor, same random-weight checkpoint, same proteins, one run.

    python bench/embed.py [--every 4] [--shapes t6,t12,t30,t33] [--threads 2] [--scaling] [--bf16 | --bf16-only]
                          [--device cuda]

Proteins: the E. coli K-12 proteome called by `glmkit call --mode single` from
../shared/data (falling back to C. diphtheriae from the pyrodigal wheel),
every k-th protein by position (`--every`, 1 = all) so lengths stay
representative. Checkpoints: random weights shaped like esm2_t6_8M_UR50D and
esm2_t12_35M_UR50D (t30, t33: the 150M and 650M models), saved in fair-esm's
layout (real weights cannot be downloaded here; speed does not depend on the
values). Both tools run as separate processes on CPU (--device cuda: both on
the GPU, as extract.py runs where one is visible); wall time includes model
loading and writing.
Prints proteins/s for both, the ratio, and the largest embedding difference.
With --scaling, also glmkit's throughput across --threads and --max-tokens.
With --bf16, also `glmkit embed --precision bf16` against fp32: throughput
ratio and the worst cosine similarity of a protein's two embeddings
(--bf16-only: that comparison alone).
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import subprocess
import sys
import time
from importlib.resources import files
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
ECOLI = ROOT.parent / "shared" / "data" / "ecoli_k12_mg1655.fna.gz"
SHAPES = {"t6": ("esm2_t6_8M_UR50D", 6, 320, 20), "t12": ("esm2_t12_35M_UR50D", 12, 480, 20),
          "t30": ("esm2_t30_150M_UR50D", 30, 640, 20), "t33": ("esm2_t33_650M_UR50D", 33, 1280, 20)}
sys.path.insert(0, str(ROOT / "tests"))


def proteome(out: Path, every: int) -> tuple[Path, int]:
    genome = ECOLI if ECOLI.exists() else files("pyrodigal.tests") / "data" / "GCF_001457455.1_NCTC11397_genomic.fna.gz"
    fasta = out / "genome.fna"
    fasta.write_bytes(gzip.decompress(Path(genome).read_bytes()))
    subprocess.run(["glmkit", "call", fasta, "-o", out / "genome.zarr", "-a", out / "all.faa", "-p", "single",
                    "-q", "--force"], check=True)
    records = (out / "all.faa").read_text().split(">")[1:]
    chosen = []
    for k, rec in enumerate(records[::every]):
        seq = "".join(rec.split("\n")[1:]).rstrip("*")
        chosen.append(f">p{k}\n{seq}\n")
    (out / "proteins.faa").write_text("".join(chosen))
    return out / "proteins.faa", len(chosen)


def timed(cmd) -> float:
    """Wall time of a command; a glmkit output's leftovers (a killed run's work folder, which --force would
    resume from) are removed first, so that every timed run embeds every protein."""
    if "-o" in cmd:
        store = Path(cmd[cmd.index("-o") + 1])
        shutil.rmtree(store, ignore_errors=True)
        for leftover in store.parent.glob(f".{store.name}.*"):
            shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink()
    t = time.perf_counter()
    subprocess.run([str(c) for c in cmd], check=True, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--every", type=int, default=4)
    parser.add_argument("--shapes", default="t6,t12")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--scaling", action="store_true")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--bf16-only", action="store_true", help="only the bf16 comparison, not the extractor's")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "embed")
    args = parser.parse_args()
    from conftest import make_fair_esm_checkpoint  # the same random-checkpoint builder the tests use
    from glmkit.io.embeddings import EmbeddingStore, sequence_hash

    args.out.mkdir(parents=True, exist_ok=True)
    faa, n = proteome(args.out, args.every)
    residues = sum(len(l) for l in faa.read_text().splitlines() if not l.startswith(">"))
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {args.threads} threads"
    print(f"{n} proteins ({residues:,} residues), {where}, fair-esm toks_per_batch 4096, glmkit --max-tokens 4096")
    device = ["--device", args.device]
    if not args.bf16_only:
        print(f"{'shape':<22}{'extract.py prot/s':>18}{'glmkit prot/s':>15}{'ratio':>8}{'max |diff|':>12}")
    for shape in args.shapes.split(","):
        name, layers, dim, heads = SHAPES[shape]
        ckpt = args.out / f"{name}.pt"  # named like the real one: fair-esm picks ESM2 from the name
        if not ckpt.exists():
            make_fair_esm_checkpoint(ckpt, layers, dim, heads)
        if args.bf16_only:
            continue
        ref_dir, store = args.out / f"extract_{shape}", args.out / f"glmkit_{shape}.zarr"
        shutil.rmtree(ref_dir, ignore_errors=True)
        t_ref = timed([sys.executable, ROOT / "bench" / "fair_esm_extract.py", ckpt, faa, ref_dir,
                       *(["--nogpu"] if args.device == "cpu" else [])])
        t_ours = timed(["glmkit", "embed", faa, "-o", store, "-m", ckpt, "-t", args.threads, *device,
                        "--precision", "fp32", "--force", "-q"])
        emb = EmbeddingStore(store)
        seqs = {l[1:].split()[0]: s for l, s in zip(*[iter(faa.read_text().splitlines())] * 2)}
        worst = 0.0
        for label, seq in seqs.items():
            ref = torch.load(ref_dir / f"{label}.pt")["mean_representations"][layers].numpy()
            worst = max(worst, float(np.abs(emb.get([sequence_hash(seq.encode())])[0] - ref).max()))
        print(f"{name + ' (random)':<22}{n / t_ref:>18.1f}{n / t_ours:>15.1f}{t_ref / t_ours:>7.2f}x{worst:>12.1e}",
              flush=True)
    if args.bf16 or args.bf16_only:
        for shape in args.shapes.split(","):
            name = SHAPES[shape][0]
            ckpt = args.out / f"{name}.pt"
            fp32 = timed(["glmkit", "embed", faa, "-o", args.out / "fp32.zarr", "-m", ckpt, "-t", args.threads,
                          *device, "--force", "-q", "--precision", "fp32"])
            bf16 = timed(["glmkit", "embed", faa, "-o", args.out / "bf16.zarr", "-m", ckpt, "-t", args.threads,
                          *device, "--force", "-q", "--precision", "bf16"])
            a = EmbeddingStore(args.out / "fp32.zarr").embedding[:].astype(np.float64)
            b = EmbeddingStore(args.out / "bf16.zarr").embedding[:].astype(np.float64)
            cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
            print(f"{name} bf16 vs fp32: {n / bf16:.1f} vs {n / fp32:.1f} prot/s ({fp32 / bf16:.2f}x); worst cosine "
                  f"{cosine.min():.5f}, median {np.median(cosine):.5f}", flush=True)
    if args.scaling:
        name, *_ = SHAPES["t6"]
        ckpt = args.out / f"{name}.pt"
        print(f"\nglmkit embed scaling, {name} (random), proteins/s")
        for threads in (1, 2):
            for tokens in (1024, 4096, 16384):
                t = timed(["glmkit", "embed", faa, "-o", args.out / "scaling.zarr", "-m", ckpt, "-t", threads,
                           "--max-tokens", tokens, "--force", "-q"])
                print(f"  --threads {threads} --max-tokens {tokens:<6} {n / t:8.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
