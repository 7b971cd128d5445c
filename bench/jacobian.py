#!/usr/bin/env python3
"""Benchmark: `glmkit jacobian` vs the published notebooks' algorithm, on the 2ONK ModA/ModC pair, in one run.

    python bench/jacobian.py [--residues 120] [--threads 2] [--full]

Model: an ESM2 of esm2_t6_8M's shape (6 layers, 320 wide, 20 heads), random
weights, written by fair-esm's own ESM2 class in fair-esm's file layout (no
weights can be downloaded here). Input: the first --residues residues of each
chain of ../shared/data/moda_modc_2onk.fasta (PDB 2ONK chains A and C: the
paper's interacting pair), concatenated. The reference
(bench/jacobian_reference.py) is the notebooks' algorithm: fair-esm's model,
one position at a time, its 20 mutants in one batch, the whole tensor kept.
glmkit is the command itself. Each runs in a child process; the script prints
wall time and peak RSS (the kernel's ru_maxrss) of both, their ratio, and the
largest difference between the two contact maps. --full also runs glmkit
alone on the whole 492-residue pair (the reference would take ~40 minutes),
and the reference's peak memory there: it allocates and post-processes the
whole tensor as for a full run but mutates only the first 10 positions (its
peak does not depend on how many it fills).
Random weights cannot show real contacts: this measures speed, memory and
agreement, not biology.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import measured  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "jacobian"
PAIR = ROOT.parent / "shared" / "data" / "moda_modc_2onk.fasta"


def model(path: Path) -> Path:
    from glmkit.models.esm2.weights import write_random_esm2

    write_random_esm2(path, 6, 320, 20)   # esm2_t6_8M's shape, seed 0
    return path


def pair(n: int | None, out: Path) -> Path:
    records = [r.splitlines() for r in PAIR.read_text().split(">")[1:]]
    with open(out, "w") as fh:
        for lines in records:
            seq = "".join(lines[1:]).strip()
            fh.write(f">{lines[0].split()[0]}\n{seq[:n] if n else seq}\n")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--residues", type=int, default=120)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--full", action="store_true")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    weights = model(OUT / "esm2_t6_random.pt")
    fasta = pair(args.residues, OUT / "pair.fasta")
    L = 2 * args.residues
    ref_rss, ref_s = measured([sys.executable, ROOT / "bench" / "jacobian_reference.py", weights, fasta,
                               OUT / "reference.npy", args.threads])
    ours_rss, ours_s = measured([sys.executable, "-m", "glmkit", "jacobian", fasta, "-m", weights, "-o",
                                 OUT / "glmkit.npy", "--threads", args.threads, "--force", "-q"])
    diff = float(np.abs(np.load(OUT / "glmkit.npy") - np.load(OUT / "reference.npy")).max())
    print(f"2ONK ModA[:{args.residues}] + ModC[:{args.residues}] = {L} residues, ESM2 6 layers x 320 (random "
          f"weights), CPU, {args.threads} threads")
    print(f"{'':<44}{'seconds':>9}{'peak RSS MB':>13}")
    print(f"{'notebook algorithm (fair-esm, full tensor)':<44}{ref_s:>9.1f}{ref_rss:>13,.0f}")
    print(f"{'glmkit jacobian (the command)':<44}{ours_s:>9.1f}{ours_rss:>13,.0f}")
    print(f"speed {ref_s / ours_s:.2f}x, memory {ours_rss / ref_rss:.2f} of the reference's; maps differ by at most "
          f"{diff:.1e}")
    if args.full:
        fasta = pair(None, OUT / "pair_full.fasta")
        rss, s = measured([sys.executable, "-m", "glmkit", "jacobian", fasta, "-m", weights, "-o",
                           OUT / "full.npy", "--threads", args.threads, "--force", "-q"])
        ref_rss, _ = measured([sys.executable, ROOT / "bench" / "jacobian_reference.py", weights, fasta,
                               OUT / "reference_full_memory.npy", args.threads, 10])
        print(f"whole pair (492 residues): glmkit {s:.0f} s, peak RSS {rss:,.0f} MB; the reference's peak RSS "
              f"{ref_rss:,.0f} MB (memory run: its full tensor, {492 ** 2 * 400 * 4 / 1e6:,.0f} MB, allocated and "
              f"post-processed, 10 positions filled); memory {rss / ref_rss:.2f} of the reference's")
    return 0


if __name__ == "__main__":
    sys.exit(main())
