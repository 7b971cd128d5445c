#!/usr/bin/env python3
"""Benchmark: `glmkit pretrain` itself vs the gLM's reference model, on real sub-contig lengths, and against the
machine's own matrix-multiply limit.

    python bench/pretrain.py [--preset small] [--steps 40] [--batch 32] [--threads 2] [--repeats 2]
                             [--precision-steps 300]

1. Corpus (bench/realistic_corpus.py): genes called in real genomes, cut into
   sub-contigs by `glmkit filter --glm-subcontigs`; random 1,280-wide
   embeddings keyed by the real proteins.
2. glmkit: the real command, `glmkit pretrain` in its own process (data path,
   masking, prefetching, logging included), timed from its own log.tsv (genes
   per second of wall time after the first 5 steps; the share of that time the
   loop waited for data).
3. Reference: the gLM as its reference code builds it (bench/roberta_reference.py:
   transformers 4.x RobertaModel with relative_key_query, its own venv),
   trained on the very sub-contigs glmkit's stream deals in the same steps,
   each padded to the batch's longest as the reference does; its step timed.
4. The limit: a plain fp32 matrix multiply at the step's GEMM shapes, in this
   run; glmkit's step FLOP/s (6 x matrix parameters x genes, + attention) over it.
5. Precision: `--precision bf16` against fp32, speed and the losses of the
   two runs over --precision-steps steps (a 2-layer, 128-wide model, so that
   the bf16 run finishes on CPUs without bf16 matrix units).
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from realistic_corpus import build, subcontig_lengths  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "pretrain"
VENV = ROOT / "bench" / "out" / "venv-transformers4"
SKIP = 5  # first steps not timed: allocation, caches


def reference_python() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", f"torch=={torch.__version__.split('+')[0]}",
                        "transformers>=4.40,<5"], check=True)
    return python


def run_glmkit(subcontigs, embeddings, out, args, *extra) -> list[dict]:
    cmd = [sys.executable, "-m", "glmkit", "pretrain", subcontigs, "-e", embeddings, "-o", out, "--force", "-q",
           "--preset", args.preset, "--batch-size", args.batch, "--threads", args.threads, "--log-every", 1,
           "--val-every", 10 ** 9, "--checkpoint-every", 10 ** 9, "--val-fraction", 0, "--corpus", OUT / "corpus.zarr",
           *extra]
    subprocess.run([str(c) for c in cmd], check=True)
    rows = [line.split("\t") for line in (Path(out) / "log.tsv").read_text().splitlines()]
    return [dict(zip(rows[0], r)) for r in rows[1:]]


def timed(log: list[dict]) -> tuple[float, float]:
    """(genes/s, share of time waiting for data) over the steps after SKIP, from per-step log rows."""
    seconds = np.diff([0.0] + [float(r["seconds"]) for r in log])[SKIP:]   # each step's wall time
    genes = np.array([float(r["genes_per_s"]) for r in log])[SKIP:] * seconds
    wait = np.array([float(r["data_wait"]) for r in log])[SKIP:] * seconds
    return genes.sum() / seconds.sum(), wait.sum() / seconds.sum()


def steps_of_stream(corpus_path: Path, batch: int, steps: int, seed: int) -> list[list[int]]:
    """The sub-contig lengths glmkit's stream deals per step (one process), for the reference to train on."""
    from glmkit.glm_data import choose_split
    from glmkit.glm_task import GLMRecipe, GLMTask
    from glmkit.io.corpus import CorpusStore

    corpus = CorpusStore(corpus_path)
    split, _, _ = choose_split(corpus, 0.0, seed)
    task = GLMTask(corpus, split, None, None, GLMRecipe(), seed, 30, {})
    stream = task.stream(False)
    lengths = corpus.array("subcontigs/length")[:]
    return [[int(lengths[i]) for row in stream.take(batch) for i in row] for _ in range(steps)]


def matmul_limit(genes: int, cfg, threads: int) -> float:
    """GFLOP/s of plain fp32 torch.mm at the shapes of the step's largest GEMMs (feed-forward, q/k/v)."""
    torch.set_num_threads(threads)
    shapes = [(genes, cfg.hidden_size, cfg.intermediate_size), (genes, cfg.intermediate_size, cfg.hidden_size),
              (genes, cfg.hidden_size, 3 * cfg.hidden_size)]
    total_flops, total_time = 0.0, 0.0
    for m, k, n in shapes:
        a, b = torch.randn(m, k), torch.randn(k, n)
        for _ in range(3):
            a @ b
        t = time.perf_counter()
        for _ in range(10):
            a @ b
        total_time += time.perf_counter() - t
        total_flops += 10 * 2 * m * k * n
    return total_flops / total_time / 1e9


def step_flops_per_gene(cfg, length: float) -> float:
    """6 x matrix parameters (forward 2, backward 4) + attention's QK^T and AV over ``length`` genes."""
    matrices = (cfg.input_dim * cfg.hidden_size + cfg.num_layers * (4 * cfg.hidden_size ** 2
                + 2 * cfg.hidden_size * cfg.intermediate_size) + cfg.hidden_size * cfg.num_predictions * (cfg.label_dim + 1))
    attention = cfg.num_layers * 2 * 2 * length * cfg.hidden_size  # QK^T and AV, per gene
    return 6 * matrices + 3 * attention


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--precision-steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    from glmkit.models.glm import GLM, load_reference_state, preset

    subcontigs, embeddings = build(ROOT / "bench" / "out" / "corpus")
    lengths = subcontig_lengths(subcontigs)
    cfg = preset(args.preset, input_dim=1281, label_dim=100)

    glmkit_runs, waits, reference_runs = [], [], []
    python = reference_python()
    for _ in range(args.repeats):  # interleaved, best of each: this machine's speed drifts over minutes
        log = run_glmkit(subcontigs, embeddings, OUT / "glm", args, "--max-steps", args.steps)
        speed, wait = timed(log)
        glmkit_runs.append(speed)
        waits.append(wait)
        spec = {"config": cfg.to_dict(), "seed": args.seed, "threads": args.threads, "warmup": SKIP,
                "steps_lengths": steps_of_stream(OUT / "corpus.zarr", args.batch, args.steps, args.seed),
                "check_lengths": [30, 30, 17, 25]}
        (OUT / "spec.json").write_text(json.dumps(spec))
        subprocess.run([python, ROOT / "bench" / "roberta_reference.py", OUT / "spec.json", OUT / "ref.pt"],
                       check=True, stderr=subprocess.DEVNULL)
        ref = torch.load(OUT / "ref.pt", weights_only=False)
        reference_runs.append(ref["genes_per_s"])
    ours, reference_speed = max(glmkit_runs), max(reference_runs)

    model = load_reference_state(GLM(cfg), ref["state"]).eval()  # equality: the reference's weights in glmkit
    with torch.no_grad():
        hidden, preds, logits, _ = model(ref["features"], ref["mask"].long())
    real = ref["mask"].bool()
    diff = max((hidden - ref["hidden"])[real].abs().max().item(), (preds - ref["preds"])[real].abs().max().item(),
               (logits - ref["logits"])[real].abs().max().item())

    genes_per_step = args.batch * lengths.mean()  # rows hold ~1 sub-contig each at these lengths
    limit = matmul_limit(int(genes_per_step), cfg, args.threads)
    achieved = step_flops_per_gene(cfg, 30) * ours / 1e9

    print(f"corpus: {len(lengths):,} sub-contigs from real genomes, {np.mean(lengths == 30):.1%} of exactly 30 genes, "
          f"mean {lengths.mean():.1f}; gLM {args.preset} ({cfg.num_layers} layers, hidden {cfg.hidden_size}), "
          f"batch {args.batch}, {args.steps} steps ({SKIP} untimed), CPU, {args.threads} threads, best of "
          f"{args.repeats} interleaved runs")
    print(f"{'':<44}{'genes/s':>10}")
    print(f"{'reference: transformers ' + ref['transformers'] + ' RobertaModel (step)':<44}{reference_speed:>10.0f}"
          f"   runs: {', '.join(f'{r:.0f}' for r in reference_runs)}")
    print(f"{'glmkit pretrain (the command, end to end)':<44}{ours:>10.0f}   runs: "
          f"{', '.join(f'{r:.0f}' for r in glmkit_runs)}; waiting for data {min(waits):.1%} of the time")
    print(f"ratio {ours / reference_speed:.2f}x; outputs with the same weights differ by at most {diff:.1e}")
    print(f"step: {achieved:.0f} GFLOP/s; plain fp32 matmul at the step's shapes: {limit:.0f} GFLOP/s; "
          f"{achieved / limit:.0%} of the limit")

    # precision: speed of the real command, and losses tracking over a longer run of a small model
    small = ["--num-layers", "2", "--hidden-size", "128", "--num-heads", "4", "--max-steps", args.precision_steps,
             "--seed", args.seed, "--lr", "3e-4", "--warmup-steps", "20"]
    fp32 = run_glmkit(subcontigs, embeddings, OUT / "fp32", args, *small, "--precision", "fp32")
    bf16 = run_glmkit(subcontigs, embeddings, OUT / "bf16", args, *small, "--precision", "bf16")
    a = np.array([float(r["train_loss"]) for r in fp32])
    b = np.array([float(r["train_loss"]) for r in bf16])
    tail = slice(len(a) - len(a) // 10, len(a))
    speed32, speed16 = timed(fp32)[0], timed(bf16)[0]
    print(f"precision (2 layers, hidden 128, {args.precision_steps} steps): fp32 {speed32:,.0f} genes/s, bf16 "
          f"{speed16:,.0f} genes/s ({speed16 / speed32:.2f}x); train loss: largest step difference "
          f"{np.abs(a - b).max():.3f}, last tenth mean fp32 {a[tail].mean():.4f} vs bf16 {b[tail].mean():.4f} "
          f"({abs(a[tail].mean() - b[tail].mean()) / a[tail].mean():.2%} apart)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
