#!/usr/bin/env python3
"""Benchmark: glmkit's gLM training step vs transformers 4.x RobertaModel (relative_key_query), same config.

    python bench/pretrain.py [--preset small] [--steps 30] [--batch 32] [--threads 2]

The reference runs in its own environment (bench/out/venv-transformers4, made
on first use: today's transformers no longer implements relative_key_query).
Both train on the same sub-contig lengths (uniform 15-30 genes, as a
metagenome's contig ends produce), the same number of sub-contigs per step,
masking 15 % of genes, the same loss and AdamW with gradient clipping. The
reference pads each sub-contig to the batch's longest and runs eager
attention; glmkit runs every per-gene operation on the real genes only (sub-contigs
packed into rows of 30 genes just for attention) and feeds the relative-position terms to scaled_dot_product_attention as a bias, with a fused
AdamW. Equality: the reference's initial weights, saved under glm.bin's key
names, are loaded into glmkit's gLM and one forward pass is compared.
Also prints contextualize's inference throughput (genes/s).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from glmkit.glm_data import pack
from glmkit.models.glm import GLM, glm_loss, load_reference_state, preset

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / "bench" / "out" / "venv-transformers4"


def reference_python() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", f"torch=={torch.__version__.split('+')[0]}",
                        "transformers>=4.40,<5"], check=True)
    return python


def packed_batch(lengths, rows, cfg, step, seed, row_genes):
    g = torch.Generator().manual_seed(seed * 1000003 + step)
    groups = pack([lengths[i] for i in rows], row_genes)
    R = len(groups)
    features = torch.randn(R, row_genes, cfg.input_dim, generator=g)
    labels = torch.randn(R, row_genes, cfg.label_dim, generator=g)
    segments = torch.zeros(R, row_genes, dtype=torch.long)
    masked = torch.zeros(R, row_genes, dtype=torch.bool)
    for r, group in enumerate(groups):
        pos = 0
        for s, k in enumerate(group, 1):
            n = lengths[rows[k]]
            segments[r, pos:pos + n] = s
            masked[r, pos + torch.randperm(n, generator=g)[:max(1, round(0.15 * n))]] = True
            pos += n
    features[masked] = -1.0
    return features, labels, segments, masked


def train_glmkit(cfg, lengths, steps, args) -> float:
    """genes/s of glmkit's training step over the timed steps."""
    torch.manual_seed(args.seed)
    model = GLM(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, fused=True)
    genes, elapsed = 0, 0.0
    for step, rows in enumerate(steps):
        features, labels, segments, masked = packed_batch(lengths, rows, cfg, step, args.seed, args.row_genes)
        t = time.perf_counter()
        _, p, lg, _ = model(features, segments)
        loss, _ = glm_loss(p, lg, labels, masked)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step >= args.warmup:
            elapsed += time.perf_counter() - t
            genes += int((segments > 0).sum())
    return genes / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--row-genes", type=int, default=30, help="glmkit's packed row length")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = ROOT / "bench" / "out" / "pretrain"
    out.mkdir(parents=True, exist_ok=True)

    cfg = preset(args.preset, input_dim=1281, label_dim=100)
    rng = np.random.default_rng(args.seed)
    lengths = rng.integers(15, 31, size=args.batch * args.steps).tolist()
    steps = [list(range(s * args.batch, (s + 1) * args.batch)) for s in range(args.steps)]
    spec = {"config": {**cfg.to_dict()}, "lengths": lengths, "steps": steps, "check_rows": steps[0][:8],
            "seed": args.seed, "threads": args.threads, "warmup": args.warmup}
    (out / "spec.json").write_text(json.dumps(spec))
    python = reference_python()
    reference_runs, ours_runs = [], []
    for _ in range(args.repeats):  # interleaved, best of each: the machine's speed drifts over minutes
        subprocess.run([python, ROOT / "bench" / "roberta_reference.py", out / "spec.json", out / "ref.pt"],
                       check=True, stderr=subprocess.DEVNULL)
        ref = torch.load(out / "ref.pt", weights_only=False)
        reference_runs.append(ref["genes_per_s"])
        ours_runs.append(train_glmkit(cfg, lengths, steps, args))
    reference_speed, ours = max(reference_runs), max(ours_runs)

    # equality: the reference's weights in glmkit's model, one padded batch
    model = load_reference_state(GLM(cfg), ref["state"]).eval()
    with torch.no_grad():
        hidden, preds, logits, _ = model(ref["features"], ref["mask"].long())
    real = ref["mask"].bool()
    diff = max((hidden - ref["hidden"])[real].abs().max().item(), (preds - ref["preds"])[real].abs().max().item(),
               (logits - ref["logits"])[real].abs().max().item())

    # contextualize: inference over windows of 30 genes, 64 per batch
    model = GLM(cfg).eval()
    x, seg = torch.randn(64, 30, cfg.input_dim), torch.ones(64, 30, dtype=torch.long)
    with torch.inference_mode():
        model.encode(x, seg)
        t = time.perf_counter()
        for _ in range(5):
            model.encode(x, seg)
        infer = 5 * 64 * 30 / (time.perf_counter() - t)

    print(f"gLM preset {args.preset} ({cfg.num_layers} layers, hidden {cfg.hidden_size}, {cfg.num_heads} heads), "
          f"CPU, {args.threads} threads, {args.batch} sub-contigs of 15-30 genes per step, "
          f"{args.steps - args.warmup} timed steps, best of {args.repeats} interleaved runs; "
          f"reference: transformers {ref['transformers']} RobertaModel")
    print(f"{'':<34}{'genes/s':>10}")
    print(f"{'reference (padded, eager)':<34}{reference_speed:>10.0f}   runs: {', '.join(f'{r:.0f}' for r in reference_runs)}")
    print(f"{'glmkit (packed, SDPA, fused AdamW)':<34}{ours:>10.0f}   runs: {', '.join(f'{r:.0f}' for r in ours_runs)}")
    print(f"ratio {ours / reference_speed:.2f}x; outputs with the same weights differ by at most {diff:.1e}")
    print(f"glmkit contextualize forward: {infer:,.0f} genes/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
