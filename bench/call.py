#!/usr/bin/env python3
"""Benchmark: glmkit call vs the prodigal binary, same inputs, one run, speed ratio and gene agreement.

    python bench/call.py [--threads 2] [--repeats 3] [--out bench/out/call]

Inputs: E. coli K-12 (../shared/data, when present) whole and as a draft cut
into contigs of 1-150 kb (log-uniform, seed 1; single mode trains on all of
them), the C. diphtheriae chromosome shipped in the pyrodigal wheel, and a
multi-contig mock metagenome cut (seed 0, log-uniform 1-150 kb) from every
genome at hand. Each case runs
prodigal (Debian) and glmkit call alternately, `--repeats` times, and keeps the
fastest of each. Both write GFF and proteins; glmkit also writes its store.
"""

from __future__ import annotations

import argparse
import gzip
import random
import shutil
import subprocess
import sys
import time
from importlib.resources import files
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ECOLI = ROOT.parent / "shared" / "data" / "ecoli_k12_mg1655.fna.gz"
PYRODIGAL = files("pyrodigal.tests") / "data"


def genome(path) -> str:
    with gzip.open(path, "rt") as fh:
        return "".join(line.strip() for line in fh if not line.startswith(">"))


def write_fasta(path: Path, records) -> Path:
    with open(path, "w") as fh:
        for name, seq in records:
            fh.write(f">{name}\n")
            fh.writelines(seq[i:i + 80] + "\n" for i in range(0, len(seq), 80))
    return path


def cut(sources: dict[str, str], seed: int) -> list[tuple[str, str]]:
    """Each genome cut into contigs of 1-150 kb (log-uniform), as an assembler leaves a draft."""
    rng = random.Random(seed)
    contigs = []
    for name, seq in sources.items():
        pos = 0
        while pos < len(seq) - 1000:
            n = int(round(10 ** rng.uniform(3, 5.176)))  # 1 kb to 150 kb
            contigs.append((f"{name}_{pos + 1}_{min(pos + n, len(seq))}", seq[pos:pos + n]))
            pos += n
    return contigs


def mock_metagenome(out: Path, sources: dict[str, str]) -> Path:
    contigs = cut(sources, 0)
    random.Random(0).shuffle(contigs)
    return write_fasta(out, contigs)


def gff_genes(path: Path) -> list[tuple]:
    return [tuple(line.split("\t")[i] for i in (0, 3, 4, 6)) for line in open(path)
            if line.strip() and not line.startswith("#")]


def timed(cmd: list) -> float:
    t = time.perf_counter()
    subprocess.run([str(c) for c in cmd], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "call")
    args = parser.parse_args()
    if not shutil.which("prodigal"):
        sys.exit("prodigal not found: apt-get install prodigal")
    glmkit = shutil.which("glmkit") or sys.exit("glmkit not on PATH: pip install .")
    args.out.mkdir(parents=True, exist_ok=True)

    sources = {"cdiph": genome(PYRODIGAL / "GCF_001457455.1_NCTC11397_genomic.fna.gz"),
               "miij": genome(PYRODIGAL / "MIIJ01000039.fna.gz"),
               "kk": genome(PYRODIGAL / "KK037166.fna.gz"), "srr": genome(PYRODIGAL / "SRR492066.fna.gz")}
    cases = []
    if ECOLI.exists():
        sources["ecoli"] = genome(ECOLI)
        ecoli = write_fasta(args.out / "ecoli.fna", [("NC_000913.3", sources["ecoli"])])
        cases += [("E. coli genome", ecoli, "single"), ("E. coli genome", ecoli, "meta")]
        draft = write_fasta(args.out / "ecoli_draft.fna", cut({"ecoli": sources["ecoli"]}, 1))
        cases.append((f"E. coli draft ({sum(1 for _ in open(draft) if _[0] == '>')} contigs)", draft, "single"))
    cdiph = write_fasta(args.out / "cdiph.fna", [("NZ_LN831026.1", sources["cdiph"])])
    cases.append(("C. diphtheriae genome", cdiph, "single"))
    meta = mock_metagenome(args.out / "mock_metagenome.fna", sources)
    n_contigs = sum(1 for line in open(meta) if line.startswith(">"))
    cases.append((f"mock metagenome ({n_contigs} contigs)", meta, "meta"))

    print(f"glmkit call vs prodigal {subprocess.run(['prodigal', '-v'], capture_output=True, text=True).stderr.split()[1].rstrip(':')}"
          f", glmkit --threads {args.threads}, best of {args.repeats}")
    print(f"{'input':<34}{'mode':<8}{'prodigal s':>11}{'glmkit s':>10}{'speed-up':>10}{'genes':>8}{'identical':>11}")
    for label, fasta, mode in cases:
        work = args.out / f"{fasta.stem}_{mode}"
        work.mkdir(exist_ok=True)
        best_p = best_g = float("inf")
        for _ in range(args.repeats):
            best_p = min(best_p, timed(["prodigal", "-i", fasta, "-o", work / "p.gff", "-f", "gff",
                                        "-a", work / "p.faa", "-p", mode, "-q"]))
            best_g = min(best_g, timed([glmkit, "call", fasta, "-o", work / "g.zarr", "--gff", work / "g.gff",
                                        "-a", work / "g.faa", "-p", mode, "-t", args.threads, "-q", "--force"]))
        ours, theirs = gff_genes(work / "g.gff"), gff_genes(work / "p.gff")
        same = len(set(ours) & set(theirs))
        print(f"{label:<34}{mode:<8}{best_p:>11.2f}{best_g:>10.2f}{best_p / best_g:>9.2f}x{len(theirs):>8}"
              f"{same / len(theirs):>10.2%}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
