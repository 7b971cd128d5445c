#!/usr/bin/env python3
"""Operons of E. coli K-12 from RegulonDB 9.3: average precision of attention, distance+strand and combined.

    python bench/operons_ecoli.py [--minutes 5] [--preset small] [--threads 2]

Runs the pipeline as a user would, each step the glmkit command: `call` the
genome (../shared/data), `embed` with a random-weight ESM2 shaped like
esm2_t6_8M_UR50D (trained weights cannot be downloaded here), `pretrain` on
the genome for --minutes, `contextualize --attention`, then `operons eval`
with RegulonDB 9.3's operon set and the RefSeq annotation (positives:
adjacent genes in one multi-gene operon, as in the paper), 5 folds by blocks
of consecutive gene pairs (one contig).

With random ESM2 weights a protein's embedding reflects its sequence but not
its function, and a gLM trained on one genome has little to learn: the
attention AP here is not the paper's figure and is not meant to be. The
distance+strand baseline needs no model and is a real figure.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "tests"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "operons_ecoli")
    args = parser.parse_args()
    if not (DATA / "regulondb_9.3_OperonSet.txt").exists():
        sys.exit(f"needs {DATA}/regulondb_9.3_OperonSet.txt, ecoli_k12_mg1655.fna.gz and .gff.gz")
    from conftest import make_fair_esm_checkpoint

    out = args.out
    out.mkdir(parents=True, exist_ok=True)

    def glmkit(*cmd):
        subprocess.run([sys.executable, "-m", "glmkit", *map(str, cmd), "-q"], check=True)

    esm = out / "esm2_t6_8M_UR50D_random.pt"
    if not esm.exists():
        make_fair_esm_checkpoint(esm, 6, 320, 20)
    if not (out / "genes.zarr").exists():
        glmkit("call", DATA / "ecoli_k12_mg1655.fna.gz", "-o", out / "genes.zarr")
    if not (out / "emb.zarr").exists():
        glmkit("embed", out / "genes.zarr", "-o", out / "emb.zarr", "-m", esm, "-t", args.threads)
    glmkit("pretrain", out / "genes.zarr", "-e", out / "emb.zarr", "-o", out / "glm", "--preset", args.preset,
           "--max-minutes", args.minutes, "--max-steps", 100_000, "--warmup-steps", 100, "--val-fraction", 0,
           "-t", args.threads, "--force")
    glmkit("contextualize", out / "genes.zarr", "-e", out / "emb.zarr", "-m", out / "glm", "-o", out / "ctx.zarr",
           "--attention", "-t", args.threads, "--force")
    glmkit("operons", "eval", out / "ctx.zarr", "-e", out / "genes.zarr", "--known",
           DATA / "regulondb_9.3_OperonSet.txt", "--annotation", DATA / "ecoli_k12_mg1655.gff.gz", "-o",
           out / "eval", "--force")
    summary = json.loads((out / "eval" / "summary.json").read_text())
    steps = (out / "glm" / "log.tsv").read_text().splitlines()[-1].split("\t")[0]
    print(f"E. coli K-12, RegulonDB 9.3; gLM {args.preset} trained {steps} steps ({args.minutes} min) on "
          f"random-weight ESM2 embeddings; {summary['evaluated_pairs']:,} neighbouring pairs, "
          f"{summary['positive']:,} in one operon ({summary['positive'] / summary['evaluated_pairs']:.1%})")
    print("matching: " + ", ".join(f"{k} {v:,}" for k, v in summary["pairs"].items()))
    print(f"{'predictor':<18}{'AP mean':>9}{'sd':>7}{'pooled':>8}")
    for name, r in summary["predictors"].items():
        print(f"{name:<18}{r['ap_mean']:>9.3f}{r['ap_sd']:>7.3f}{r['ap_pooled']:>8.3f}")
    b = summary["best_head"]
    print(f"best head L{b['layer']}-H{b['head']}: r {b['pearson_r']:.3f}, AP {b['ap']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
