#!/usr/bin/env python3
"""Does the gLM learn? Train the `small` preset on real genomes and compare with two baselines.

    python bench/glm_learning.py [--minutes 8] [--esm t6]

Genomes: E. coli K-12 (../shared/data, when present) and the four assemblies
shipped in the pyrodigal wheel, genes called with glmkit call, embedded with a
random-weight ESM2 shaped like esm2_t6_8M_UR50D (real weights cannot be
downloaded here), cut into gLM sub-contigs; whole contigs held out for
validation. After a time-bounded run on CPU, every validation sub-contig is
scored with fixed masks (15 % of genes) by pseudo-accuracy (a masked gene is
correct when the prediction lies nearer its own label than any other gene's
label in the sub-contig) for:

  gLM                the closest of its 4 predictions (the paper's metric)
  gLM top-1          its most likely prediction
  mean label         the mean training label, whatever the gene
  neighbour label    the label of the nearest unmasked gene in the sub-contig

Random ESM2 weights make every embedding a hash of the sequence: the label
carries the orientation (one of 100 dims) and nothing about function, so only
orientation and repeated proteins are learnable. See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
ECOLI = ROOT.parent / "shared" / "data" / "ecoli_k12_mg1655.fna.gz"
sys.path.insert(0, str(ROOT / "tests"))


def sh(*cmd):
    subprocess.run([str(c) for c in cmd], check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "learning")
    args = parser.parse_args()
    from conftest import make_fair_esm_checkpoint
    from glmkit.glm_data import Normalization, load_corpus, make_batch, split_by_contig
    from glmkit.io.checkpoint import load_checkpoint
    from glmkit.models.glm import GLM, GLMConfig
    from glmkit.pretrain import PretrainOptions, masks_for, run_pretrain

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    data = files("pyrodigal.tests") / "data"
    genomes = [Path(data / n) for n in ("GCF_001457455.1_NCTC11397_genomic.fna.gz", "MIIJ01000039.fna.gz",
                                        "KK037166.fna.gz", "SRR492066.fna.gz")]
    if ECOLI.exists():
        genomes.insert(0, ECOLI)
    if not (out / "elements.zarr").exists():
        sh("glmkit", "call", *genomes, "-o", out / "elements.zarr", "-q")
    ckpt = out / "esm2_t6_8M_UR50D.pt"
    if not ckpt.exists():
        make_fair_esm_checkpoint(ckpt, 6, 320, 20)
    if not (out / "embeddings.zarr").exists():
        sh("glmkit", "embed", out / "elements.zarr", "-o", out / "embeddings.zarr", "-m", ckpt, "-t", args.threads, "-q")
    options = PretrainOptions(preset="small", max_steps=100_000, max_minutes=args.minutes, batch_size=32,
                              warmup_steps=200, lr=2e-4, val_fraction=0.2, val_every=200, checkpoint_every=500,
                              log_every=50, threads=args.threads)
    result = run_pretrain([str(out / "elements.zarr")], str(out / "embeddings.zarr"), str(out / "glm"), options,
                          force=True)

    corpus = load_corpus([str(out / "elements.zarr")], str(out / "embeddings.zarr"))
    train, val = split_by_contig(corpus.subcontigs, options.val_fraction, options.seed)
    meta, weights, norm_arrays, _ = load_checkpoint(out / "glm", "gLM")
    model = GLM(GLMConfig(**meta["config"]))
    model.load_state_dict(weights)
    model.eval()
    norm = Normalization(**{k: v.numpy() for k, v in norm_arrays.items()})
    z = norm.standardize(corpus.embeddings)
    labels = norm.labels(z)
    train_rows = np.unique(np.concatenate([corpus.subcontigs[i].rows for i in train]))
    mean_label = labels[train_rows].mean(0)

    hits = {"gLM (closest of 4)": 0, "gLM top-1": 0, "mean label": 0, "neighbour label": 0}
    total = 0
    for k, i in enumerate(val):
        features, target, segments = make_batch(corpus, [[i]], z, labels, 30)
        masked = masks_for(segments, 0.15, 0, 0, 10**6 + k)
        features[masked] = -1.0
        with torch.no_grad():
            _, preds, logits, _ = model(torch.from_numpy(features), torch.from_numpy(segments))
        n = int((segments[0] > 0).sum())
        lab = target[0, :n]
        mean_full = np.concatenate([mean_label, [0.0]])
        for p in np.flatnonzero(masked[0, :n]):
            candidates = preds[0, p].numpy()
            closest = candidates[((candidates - lab[p]) ** 2).sum(1).argmin()]
            top1 = candidates[logits[0, p].argmax().item()]
            unmasked = [q for q in range(n) if not masked[0, q]]
            neighbour = lab[min(unmasked, key=lambda q: (abs(q - p), q))] if unmasked else mean_full
            for name, guess in (("gLM (closest of 4)", closest), ("gLM top-1", top1),
                                ("mean label", mean_full), ("neighbour label", neighbour)):
                d = ((lab - guess) ** 2).sum(1)
                hits[name] += bool(d[p] <= d.min())
            total += 1
    print(f"{len(genomes)} genomes, {len(corpus.subcontigs)} sub-contigs ({len(train)} train / {len(val)} validation, "
          f"split by contig); gLM small, {result['step']} steps in {result['minutes']:.1f} min on CPU; "
          f"{total} masked validation genes")
    for name, h in hits.items():
        print(f"  {name:<20} pseudo-accuracy {h / total:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
