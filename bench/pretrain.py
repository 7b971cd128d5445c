#!/usr/bin/env python3
"""Benchmark: `glmkit pretrain` itself vs the gLM's reference model, on real sub-contig lengths, and against the
machine's own matrix-multiply limit; with --arch glm2, gLM2 training vs gLM2's published forward.

    python bench/pretrain.py [--preset small] [--steps 40] [--batch 32] [--threads 2] [--repeats 2]
                             [--precision-steps 300] [--precision-small]
    python bench/pretrain.py --arch glm2 [--preset small] [--context 4096] [--steps 12] [--batch 4]
    python bench/pretrain.py --device cuda [--preset paper] [--steps 60] [--precision-steps 300]

gLM2 (--arch glm2): the element store of the same genomes after the OMG rules
(`glmkit filter`); `glmkit pretrain --arch glm2` (the command, chunks packed
into rows of --context) against bench/glm2_reference.py, a transcription of
the published gLM2ForMaskedLM forward (each chunk its own row, padded to the
batch's longest, key-padding mask, its own rotary cache), trained with
AdamW on the very chunks and corrupted tokens glmkit's stream dealt in the
same steps; tokens/s of real tokens for both, and the largest logit
difference with the same weights.

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
   run, by torch.mm and by oneDNN (the faster is the limit); glmkit's step
   FLOP/s (6 x matrix parameters x genes, + attention) over it.
5. Precision: `--precision bf16` against fp32 on the same preset, speed and
   the losses of the two runs over --precision-steps steps (--precision-small:
   a 2-layer, 128-wide model instead, so that the bf16 run finishes on CPUs
   without bf16 matrix units, where bf16 is ~20x slower than fp32); and the
   ceiling of that ratio on this CPU: the step's largest linear layers alone
   (forward and both gradients, as glmkit runs them in each precision).

On a GPU (--device cuda): the command at fp32 and bf16 (and bf16 with
--compile, and with --static-shapes --compile: CUDA graphs; both timed
after their compilation) on the same corpus, each against
the GPU's own matrix multiply at the step's shapes (fp32 as torch runs it
by default, without TF32; bf16), and the two runs' losses. The
reference is not run there: its transformers-4 venv is installed from a
package registry, which a GPU node may lack.
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
from realistic_corpus import build, build_omg, subcontig_lengths  # noqa: E402

from glmkit.models.layers import onednn_fp32_gemms  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "pretrain"
VENV = ROOT / "bench" / "out" / "venv-transformers4"
SKIP = 5  # first steps not timed: allocation, caches
GPU_LOG_EVERY = 5


def reference_python() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", f"torch=={torch.__version__.split('+')[0]}",
                        "transformers>=4.40,<5"], check=True)
    return python


def run_glmkit(subcontigs, embeddings, out, args, *extra, preamble: str = "") -> list[dict]:
    """`glmkit pretrain` in a child process (which runs ``preamble`` first: bench/tricks.py's with and without);
    its log.tsv rows, one a step."""
    argv = [str(c) for c in ["pretrain", subcontigs, "-e", embeddings, "-o", out, "--force", "-q", "--preset",
                             args.preset, "--batch-size", args.batch, "--threads", args.threads, "--log-every", 1,
                             "--val-every", 10 ** 9, "--checkpoint-every", 10 ** 9, "--val-fraction", 0, "--corpus",
                             OUT / "corpus.zarr", *extra]]
    code = f"import sys\n{preamble}\nsys.argv = ['glmkit', *{argv!r}]\nfrom glmkit.cli import main\nmain()\n"
    subprocess.run([sys.executable, "-c", code], check=True)
    rows = [line.split("\t") for line in (Path(out) / "log.tsv").read_text().splitlines()]
    return [dict(zip(rows[0], r)) for r in rows[1:]]


def timed(log: list[dict], unit: str = "genes", skip: int = SKIP) -> tuple[float, float]:
    """(units/s, share of time waiting for data) over the steps after ``skip``, from per-step log rows."""
    seconds = np.diff([0.0] + [float(r["seconds"]) for r in log])[skip:]   # each step's wall time
    genes = np.array([float(r[f"{unit}_per_s"]) for r in log])[skip:] * seconds
    wait = np.array([float(r["data_wait"]) for r in log])[skip:] * seconds
    return genes.sum() / seconds.sum(), wait.sum() / seconds.sum()


def steps_of_stream(corpus_path: Path, batch: int, steps: int, seed: int) -> list[list[int]]:
    """The sub-contig lengths glmkit's stream deals per step (one process), for the reference to train on."""
    from glmkit.data.split import choose_split
    from glmkit.models.glm.task import GLMRecipe, GLMTask
    from glmkit.io.corpus import CorpusStore

    corpus = CorpusStore(corpus_path)
    split, _, _ = choose_split(corpus, 0.0, seed)
    task = GLMTask(corpus, split, None, None, GLMRecipe(), seed, 30, {})
    stream = task.stream(False)
    lengths = corpus.array("subcontigs/length")[:]
    return [[int(lengths[i]) for row in stream.take(batch) for i in row] for _ in range(steps)]


def step_gemm_shapes(genes: int, cfg) -> list[tuple[int, int, int]]:
    """(m, k, n) of the step's largest GEMMs, which the limit is measured at: feed-forward in and out, q/k/v."""
    return [(genes, cfg.hidden_size, cfg.intermediate_size), (genes, cfg.intermediate_size, cfg.hidden_size),
            (genes, cfg.hidden_size, 3 * cfg.hidden_size)]


def seconds_of(f, calls: int = 10) -> float:
    """Wall seconds of ``calls`` calls of ``f``, after 3 untimed ones (warm caches, allocations, packed weights)."""
    for _ in range(3):
        f()
    t = time.perf_counter()
    for _ in range(calls):
        f()
    return time.perf_counter() - t


def matmul_limit(genes: int, cfg, threads: int) -> dict[str, float]:
    """GFLOP/s of a plain fp32 product at the shapes of the step's largest GEMMs (feed-forward, q/k/v): torch.mm
    (torch's default BLAS, MKL in the pip wheels) and oneDNN's (glmkit.models.layers, which the models use on
    AMD CPUs with AVX-512, where it is the faster of the two)."""
    from glmkit.models.layers import _gemm

    torch.set_num_threads(threads)
    shapes = step_gemm_shapes(genes, cfg)
    flops = sum(10 * 2 * m * k * n for m, k, n in shapes)
    kinds = {"torch.mm": lambda a, b: a @ b.t(), "oneDNN": _gemm}
    best = dict.fromkeys(kinds, float("inf"))
    for _ in range(3):  # interleaved, best of 3: the two see the same machine
        for name, product in kinds.items():
            total_time = 0.0
            for m, k, n in shapes:
                a, b = torch.randn(m, k), torch.randn(n, k)
                total_time += seconds_of(lambda: product(a, b))
            best[name] = min(best[name], total_time)
    return {name: flops / seconds / 1e9 for name, seconds in best.items()}


def linear_layers_seconds(genes: int, cfg, threads: int, precision: str) -> float:
    """Seconds of the step's largest linear layers alone (step_gemm_shapes), forward and both gradients, run as
    glmkit runs them: fp32 through glmkit.models.layers.linear, bf16 under autocast (its weight casts included).
    The bf16 / fp32 ratio of these is the ceiling of the step's own ratio: the rest of the step gains less."""
    from glmkit.models.layers import linear

    torch.set_num_threads(threads)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    total = 0.0
    for m, k, n in step_gemm_shapes(genes, cfg):
        x = torch.randn(m, k, requires_grad=True)
        w, b = torch.nn.Parameter(torch.randn(n, k) / k ** 0.5), torch.nn.Parameter(torch.zeros(n))
        grad = torch.randn(m, n, dtype=dtype)

        def step():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                y = linear(x, w, b)
            y.backward(grad)

        total += seconds_of(step)
    return total


def step_flops_per_gene(cfg, length: float) -> float:
    """6 x matrix parameters (forward 2, backward 4) + attention's QK^T and AV over ``length`` genes."""
    matrices = (cfg.input_dim * cfg.hidden_size + cfg.num_layers * (4 * cfg.hidden_size ** 2
                + 2 * cfg.hidden_size * cfg.intermediate_size) + cfg.hidden_size * cfg.num_predictions * (cfg.label_dim + 1))
    attention = cfg.num_layers * 2 * 2 * length * cfg.hidden_size  # QK^T and AV, per gene
    return 6 * matrices + 3 * attention


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=("glm", "glm2"), default="glm")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--context", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--precision-steps", type=int, default=300)
    parser.add_argument("--precision-small", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.arch == "glm2":
        args.steps, args.batch = args.steps or 12, args.batch or 4
        return main_glm2(args)
    if args.device == "cuda":
        args.steps, args.batch = args.steps or 60, args.batch or 32
        return main_gpu(args)
    args.steps, args.batch = args.steps or 40, args.batch or 32
    from glmkit.models.glm.model import GLM, preset
    from glmkit.models.glm.weights import load_reference_state

    subcontigs, embeddings = build(ROOT / "bench" / "out" / "corpus")
    lengths = subcontig_lengths(subcontigs)
    cfg = preset(args.preset, input_dim=1281, label_dim=100)

    glmkit_runs, waits, reference_runs, limits = [], [], [], []
    python = reference_python()
    genes_per_step = args.batch * lengths.mean()  # rows hold ~1 sub-contig each at these lengths
    for _ in range(args.repeats):  # interleaved, best of each: this machine's speed drifts over minutes
        log = run_glmkit(subcontigs, embeddings, OUT / "glm", args, "--max-steps", args.steps)
        speed, wait = timed(log)
        glmkit_runs.append(speed)
        waits.append(wait)
        limits.append(matmul_limit(int(genes_per_step), cfg, args.threads))  # right after the run it bounds
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

    achieved = [step_flops_per_gene(cfg, 30) * run / 1e9 for run in glmkit_runs]
    shares = [a / max(limit.values()) for a, limit in zip(achieved, limits)]
    shares_mm = [a / limit["torch.mm"] for a, limit in zip(achieved, limits)]

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
    print(f"step: {max(achieved):.0f} GFLOP/s at best; plain fp32 matmul at the step's shapes right after each run: "
          + "; ".join(", ".join(f"{name} {rate:.0f}" for name, rate in limit.items()) for limit in limits)
          + " GFLOP/s")
    print(f"share of the limit (the faster matmul), run by run: {', '.join(f'{x:.0%}' for x in shares)} (best "
          f"{max(shares):.0%}); of torch.mm's: {', '.join(f'{x:.0%}' for x in shares_mm)}; the step's GEMMs by "
          f"{'oneDNN' if onednn_fp32_gemms() else 'torch.mm'}")

    # precision: speed of the real command, and losses tracking over a longer run (0 steps: skipped)
    if args.precision_steps == 0:
        return 0
    shape = ["--num-layers", "2", "--hidden-size", "128", "--num-heads", "4"] if args.precision_small else []
    model = "2 layers, hidden 128" if args.precision_small else f"{args.preset} preset"
    run = [*shape, "--max-steps", args.precision_steps, "--seed", args.seed, "--lr", "3e-4", "--warmup-steps", "20"]
    fp32 = run_glmkit(subcontigs, embeddings, OUT / "fp32", args, *run, "--precision", "fp32")
    bf16 = run_glmkit(subcontigs, embeddings, OUT / "bf16", args, *run, "--precision", "bf16")
    a = np.array([float(r["train_loss"]) for r in fp32])
    b = np.array([float(r["train_loss"]) for r in bf16])
    tail = slice(len(a) - len(a) // 10, len(a))
    speed32, speed16 = timed(fp32)[0], timed(bf16)[0]
    print(f"precision ({model}, {args.precision_steps} steps): fp32 {speed32:,.0f} genes/s, bf16 "
          f"{speed16:,.0f} genes/s ({speed16 / speed32:.2f}x); train loss: largest step difference "
          f"{np.abs(a - b).max():.3f}, last tenth mean fp32 {a[tail].mean():.4f} vs bf16 {b[tail].mean():.4f} "
          f"({abs(a[tail].mean() - b[tail].mean()) / a[tail].mean():.2%} apart)")
    if not args.precision_small:  # the ceiling of that ratio on this CPU: the linear layers alone, interleaved
        seconds = {"fp32": [], "bf16": []}
        for _ in range(3):
            for precision in seconds:
                seconds[precision].append(linear_layers_seconds(int(genes_per_step), cfg, args.threads, precision))
        ceiling = min(seconds["fp32"]) / min(seconds["bf16"])
        print(f"ceiling: the step's linear layers alone (forward and both gradients, {int(genes_per_step)} genes): "
              f"bf16 {ceiling:.2f}x fp32 (best of 3 each); the command reached {speed16 / speed32 / ceiling:.0%} of it")
    return 0


# -- on a GPU ---------------------------------------------------------------------------------------------------

def gpu_matmul_limit(genes: int, cfg, dtype: torch.dtype) -> float:
    """GFLOP/s of plain torch.mm on the GPU at the step's largest GEMM shapes (CUDA events, after warm-up)."""
    shapes = step_gemm_shapes(genes, cfg)
    total_flops, total_ms = 0.0, 0.0
    for m, k, n in shapes:
        a, b = torch.randn(m, k, device="cuda", dtype=dtype), torch.randn(k, n, device="cuda", dtype=dtype)
        for _ in range(10):
            a @ b
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(100):
            a @ b
        end.record()
        torch.cuda.synchronize()
        total_ms += start.elapsed_time(end)
        total_flops += 100 * 2 * m * k * n
    return total_flops / (total_ms / 1e3) / 1e9


def main_gpu(args) -> int:
    from glmkit.models.glm.model import preset

    subcontigs, embeddings = build(ROOT / "bench" / "out" / "corpus")
    lengths = subcontig_lengths(subcontigs)
    cfg = preset(args.preset, input_dim=1281, label_dim=100)
    genes_per_step = args.batch * lengths.mean()
    print(f"corpus: {len(lengths):,} sub-contigs from real genomes, {np.mean(lengths == 30):.1%} of exactly 30 genes; "
          f"gLM {args.preset} ({cfg.num_layers} layers, hidden {cfg.hidden_size}), batch {args.batch}, "
          f"{torch.cuda.get_device_name()}")
    print(f"{'glmkit pretrain --device cuda':<34}{'genes/s':>10}{'ms/step':>9}{'step GFLOP/s':>14}"
          f"{'matmul GFLOP/s':>16}{'of limit':>10}{'data wait':>11}")
    speeds = {}
    # the last row: one tensor shape a step, compiled, replayed as CUDA graphs (glmkit/train.py)
    for precision, dtype, flags in (("fp32", torch.float32, ()), ("bf16", torch.bfloat16, ()),
                                    ("bf16", torch.bfloat16, ("--compile",)),
                                    ("bf16", torch.bfloat16, ("--static-shapes", "--compile"))):
        skip = SKIP + 15 if flags else SKIP   # compiling takes the first steps (and new shapes' recompiles)
        name = " ".join(("--precision", precision) + flags)
        # a log row every GPU_LOG_EVERY steps: each row reads the loss back, which a GPU-bound step must not wait for
        steps = -(-(args.steps + skip - SKIP) // GPU_LOG_EVERY) * GPU_LOG_EVERY
        log = run_glmkit(subcontigs, embeddings, OUT / f"gpu_{name.replace(' ', '_').replace('-', '')}", args,
                         "--max-steps", steps, "--device", "cuda", "--precision", precision, *flags,
                         "--log-every", GPU_LOG_EVERY)
        speed, wait = timed(log, skip=-(-skip // GPU_LOG_EVERY))
        speeds[name] = speed
        achieved = step_flops_per_gene(cfg, 30) * speed / 1e9
        limit = gpu_matmul_limit(int(genes_per_step), cfg, dtype)
        print(f"{'  ' + name:<34}{speed:>10,.0f}"
              f"{genes_per_step / speed * 1e3:>9.1f}{achieved:>14,.0f}{limit:>16,.0f}{achieved / limit:>10.0%}"
              f"{wait:>11.1%}", flush=True)
    fp32 = speeds["--precision fp32"]
    print(f"bf16 / fp32, both eager: {speeds['--precision bf16'] / fp32:.2f}x; bf16 as CUDA graphs / fp32 eager: "
          f"{speeds['--precision bf16 --static-shapes --compile'] / fp32:.2f}x")
    run = ["--max-steps", args.precision_steps, "--seed", args.seed, "--lr", "3e-4", "--warmup-steps", "20",
           "--device", "cuda"]
    a = np.array([float(r["train_loss"]) for r in run_glmkit(subcontigs, embeddings, OUT / "gpu_loss32", args, *run,
                                                              "--precision", "fp32")])
    b = np.array([float(r["train_loss"]) for r in run_glmkit(subcontigs, embeddings, OUT / "gpu_loss16", args, *run,
                                                              "--precision", "bf16")])
    tail = slice(len(a) - len(a) // 10, len(a))
    print(f"losses over {args.precision_steps} steps: largest step difference {np.abs(a - b).max():.3f}; last tenth "
          f"mean fp32 {a[tail].mean():.4f} vs bf16 {b[tail].mean():.4f} "
          f"({abs(a[tail].mean() - b[tail].mean()) / a[tail].mean():.2%} apart)")
    return 0


# -- gLM2 ------------------------------------------------------------------------------------------------------

def glmkit_glm2(elements, args) -> list[dict]:
    out = OUT / "glm2"
    cmd = [sys.executable, "-m", "glmkit", "pretrain", elements, "--arch", "glm2", "-o", out, "--force", "-q",
           "--preset", args.preset, "--context", args.context, "--batch-size", args.batch, "--threads", args.threads,
           "--max-steps", args.steps, "--log-every", 1, "--val-every", 10 ** 9, "--checkpoint-every", 10 ** 9,
           "--val-fraction", 0, "--seed", args.seed, "--corpus", OUT / "glm2_corpus.zarr"]
    subprocess.run([str(c) for c in cmd], check=True)
    rows = [line.split("\t") for line in (out / "log.tsv").read_text().splitlines()]
    return [dict(zip(rows[0], r)) for r in rows[1:]]


def glm2_steps(args):
    """The micro-batches glmkit's stream deals (one process): packed rows of corrupted tokens."""
    from glmkit.models.glm2.corpus import training_token_counts
    from glmkit.models.glm2.task import GLM2Task
    from glmkit.data.split import choose_split
    from glmkit.io.token_corpus import TokenCorpusStore
    from glmkit.models.glm2.model import glm2_preset

    corpus = TokenCorpusStore(OUT / "glm2_corpus.zarr")
    split, _, _ = choose_split(corpus, 0.0, args.seed, "chunks")
    task = GLM2Task(corpus, split, glm2_preset(args.preset), 0.3, args.seed, args.context, {},
                    training_token_counts(corpus, split))
    steps = task.train_steps(None, 0, 1, args.batch, 1)
    return corpus, [next(steps)[0][0] for _ in range(args.steps)]


def unpack(batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A packed batch as the published model takes it: each chunk its own row, padded to the longest; labels -100
    where nothing is predicted. Returns (input_ids, attention_mask, labels)."""
    from glmkit.models.glm2.tokens import PAD

    chunks = []
    for b in range(len(batch["segments"])):
        for seg in range(1, int(batch["segments"][b].max()) + 1):
            at = batch["segments"][b] == seg
            chunks.append((batch["tokens"][b][at], np.where(batch["masked"][b][at], batch["targets"][b][at], -100)))
    longest = max(len(c[0]) for c in chunks)
    ids = torch.full((len(chunks), longest), PAD, dtype=torch.long)
    labels = torch.full((len(chunks), longest), -100, dtype=torch.long)
    mask = torch.zeros((len(chunks), longest), dtype=torch.long)
    for i, (t, lab) in enumerate(chunks):
        ids[i, :len(t)], labels[i, :len(t)], mask[i, :len(t)] = torch.from_numpy(t), torch.from_numpy(lab), 1
    return ids, mask, labels


def reference_glm2(cfg, state, steps, threads, glmkit_model: bool = False) -> tuple[float, list[int]]:
    """Tokens/s of the published forward trained on the same steps (after SKIP), and the rows it needed. With
    ``glmkit_model``: glmkit's model on the same padded rows (what packing alone is worth, by difference)."""
    from glm2_reference import GLM2ForMaskedLM

    from glmkit.models.glm2.model import GLM2
    from glmkit.models.glm2.weights import glmkit_name

    torch.set_num_threads(threads)
    if glmkit_model:
        model = GLM2(cfg)
        model.load_state_dict({glmkit_name(k): v for k, v in state.items()})
    else:
        model = GLM2ForMaskedLM(cfg)
        model.load_state_dict(state)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    model.train()
    tokens, seconds, rows = 0, 0.0, []
    for k, batch in enumerate(steps):
        ids, mask, labels = unpack(batch)
        rows.append(int(ids.numel()))
        start = time.perf_counter()
        if glmkit_model:
            chosen = labels >= 0
            logits, _ = model(ids, mask, only=chosen)
            loss = torch.nn.functional.cross_entropy(logits, labels[chosen])
        else:
            loss, _ = model(ids, mask, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if k >= SKIP:
            seconds += time.perf_counter() - start
            tokens += int(mask.sum())
    return tokens / seconds, rows


def main_glm2(args) -> int:
    from glmkit.models.glm2.model import GLM2, glm2_preset
    from glmkit.models.glm2.weights import published_name

    elements = build_omg(ROOT / "bench" / "out" / "corpus")
    cfg = glm2_preset(args.preset)
    ours, theirs, waits, unpacked = [], [], [], []
    for _ in range(args.repeats):  # interleaved, best of each
        log = glmkit_glm2(elements, args)
        speed, wait = timed(log, "tokens")
        ours.append(speed)
        waits.append(wait)
        corpus, steps = glm2_steps(args)
        torch.manual_seed(args.seed)
        model = GLM2(cfg)
        state = {published_name(k): v for k, v in model.state_dict().items()}
        speed, padded = reference_glm2(cfg, state, steps, args.threads)
        theirs.append(speed)
        unpacked.append(reference_glm2(cfg, state, steps, args.threads, glmkit_model=True)[0])
    # the same weights: glmkit's packed rows against the published forward's padded rows, on real tokens
    from glm2_reference import GLM2ForMaskedLM

    reference = GLM2ForMaskedLM(cfg)
    reference.load_state_dict(state)
    batch = steps[0]
    with torch.no_grad():
        packed, _ = model.eval()(torch.from_numpy(batch["tokens"]), torch.from_numpy(batch["segments"]))
        ids, mask, _ = unpack(batch)
        _, padded_logits = reference.eval()(ids, mask)
    ours_real = torch.cat([packed[b][torch.from_numpy(batch["segments"][b] == s)]
                           for b in range(len(batch["segments"]))
                           for s in range(1, int(batch["segments"][b].max()) + 1)])
    diff = float((ours_real - padded_logits[mask.bool()]).abs().max())
    lengths = corpus.array("chunks/length")[:]
    real = sum(int((b["segments"] > 0).sum()) for b in steps)
    print(f"corpus: {corpus.n_contigs:,} contigs of real genomes after the OMG rules, {len(lengths):,} chunks of "
          f"at most {args.context} tokens (mean {lengths.mean():,.0f}, {np.mean(lengths < args.context):.0%} shorter); "
          f"gLM2 {args.preset} ({cfg.depth} layers, dim {cfg.dim}, {cfg.heads} heads), {args.batch} packed rows a "
          f"step, {args.steps} steps ({SKIP} untimed), CPU, {args.threads} threads, best of {args.repeats}")
    print(f"padding: glmkit's packed rows hold {real / (len(steps) * args.batch * args.context):.0%} real tokens; "
          f"the published forward's padded rows {real / sum(padded):.0%}")
    print(f"{'':<52}{'tokens/s':>10}")
    print(f"{'published gLM2 forward, padded rows (step)':<52}{max(theirs):>10.0f}   runs: "
          f"{', '.join(f'{r:.0f}' for r in theirs)}")
    print(f"{'glmkit pretrain --arch glm2 (the command)':<52}{max(ours):>10.0f}   runs: "
          f"{', '.join(f'{r:.0f}' for r in ours)}; waiting for data {min(waits):.1%} of the time")
    print(f"{'glmkit model on the same padded rows (step)':<52}{max(unpacked):>10.0f}   runs: "
          f"{', '.join(f'{r:.0f}' for r in unpacked)}")
    print(f"ratio {max(ours) / max(theirs):.2f}x (model and kernels {max(unpacked) / max(theirs):.2f}x, packing "
          f"{max(ours) / max(unpacked):.2f}x); logits with the same weights differ by at most {diff:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
