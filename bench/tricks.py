#!/usr/bin/env python3
"""Benchmark: each speed trick docs/benchmarks.md credits, with and without it, in one run.

    python bench/tricks.py [malloc gc imports zarr-gather dropout softmax fused-adamw ...] [--repeats 3]

Each trick is measured alternately with and without (best of --repeats), on
the workload it serves:

  malloc       embed: ESM2 forward (a 12-layer, 480-wide ESM2, esm2_t12_35M's shape, random weights; 13 proteins of
               300 residues) in a child process with and without glibc keeping freed buffers
               (glmkit.resources.keep_freed_memory, which only the glmkit command-line process applies)
  arenas       contextualize: peak RSS (and time) of `glmkit contextualize` over bench/scale.py's corpus of 10^5
               proteins (and its tiny gLM), with freed buffers kept in one glibc arena vs one arena per thread
               (keep_freed_memory's one_arena)

  gc           call: `glmkit call` on the C. diphtheriae chromosome (single mode), with and without freezing the
               live objects out of the cyclic GC (call.py's gc.freeze, the CLI's exit-time freeze)
  imports      call: the same command, with numpy and zarr imported before training (as before call deferred them)
  zarr-gather  call's store: an element store's ~30 columns closed in one gathered round on zarr's event loop
               vs closed one after another
  dropout      pretrain: the gLM's Dropout (16-bit integer masks, four from each 64-bit draw) vs torch's F.dropout
               and vs the 24-bit masks (one draw each) it used before, on one step's activations
  attention-dropout
               pretrain: `glmkit pretrain` as in blas-beside-torch (fp32 and bf16) with the attention
               probabilities' dropout done by the gLM's own lines (softmax, Dropout, product:
               SelfAttention._attend) vs scaled_dot_product_attention's dropout_p, whose CPU kernels fall back
               to the same math with a bernoulli_ mask
  softmax      pretrain and contextualize in bf16: the gLM's attention probabilities (SelfAttention._probabilities,
               forward and backward at one small-gLM layer's shapes, 32 rows x 8 heads x 30 x 30) with the softmax
               computed in float32 vs torch's bf16 softmax; then `glmkit pretrain --precision bf16` as in
               blas-beside-torch with each
  fused-adamw  pretrain: AdamW fused vs foreach over the small gLM's parameters
  blas-beside-torch
               pretrain: `glmkit pretrain` (small preset, bench/pretrain.py's corpus of real sub-contig lengths, 40
               steps, fp32 and bf16) with numpy's BLAS on one thread while torch trains (torch_threads, through
               parallel.one_blas_thread) vs numpy's own thread count: the data thread's PCA product otherwise
               wakes OpenBLAS workers that spin on the cores torch's threads wait for; seconds a step, from the
               command's log.tsv
  gpu-indexing pretrain on a GPU: one training step of the paper-preset gLM (forward, backward, AdamW; 32 rows of
               30 genes, 15 % masked, bf16) with the real genes gathered and scattered at flat positions found once
               (glm.flat_positions) vs boolean masks in every layer, each a nonzero that makes the host wait for
               the GPU; on a CPU (no such wait) it shows the cost of the change there
  glm2-mask    pretrain --arch glm2: attention (forward and backward, one layer of the small gLM2) with its mask
               broadcast over heads, (B, 1, L, L), vs expanded to every head as the published forward does
  jacobian-passes
               jacobian: `glmkit jacobian` (bench/jacobian.py's workload: an ESM2 of esm2_t6_8M's shape, random
               weights, the first 120 + 120 residues of the 2ONK pair; ~200 s a run) on 2 threads, its forward
               passes side by side one thread each (jacobian.PASSES_SIDE_BY_SIDE; batch 1 each) vs one pass at a
               time over both threads (batch 3)
  onednn-linear
               pretrain and embed: fp32 linear layers with their GEMMs (forward, and in training both gradients) by
               oneDNN (glmkit.models.layers.linear) vs torch's default BLAS (MKL): `glmkit pretrain` as in
               blas-beside-torch, and the malloc trick's ESM2 forward; both paths forced, whichever this CPU selects
               (oneDNN on AMD CPUs with AVX-512, where MKL runs its AVX2 code)
(oneDNN linears on pre-packed weights, credited 1.5x over MKL's addmm by an earlier benchmark, measured 0.9x
with torch 2.13 on an AVX2-only AMD EPYC and were removed; onednn-linear is the selective successor.)
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from importlib.resources import files
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYRODIGAL = files("pyrodigal.tests") / "data"


def best(f, repeats: int) -> float:
    return min(f() for _ in range(repeats))


def alternate(a, b, repeats: int) -> tuple[float, float]:
    ta, tb = [], []
    for _ in range(repeats):
        ta.append(a())
        tb.append(b())
    return min(ta), min(tb)


def ms_per_call(f, calls: int) -> float:
    """Milliseconds a call of ``f``, over ``calls`` calls after 3 untimed ones (bench/pretrain.py's seconds_of)."""
    sys.path.insert(0, str(ROOT / "bench"))
    from pretrain import seconds_of

    return seconds_of(f, calls) / calls * 1000


def report(name: str, without: float, with_: float, unit: str = "s") -> None:
    print(f"{name:<12} without {without:8.3f} {unit}   with {with_:8.3f} {unit}   gain {without / with_:5.2f}x", flush=True)


# -- embed -----------------------------------------------------------------------------------------------------

ESM_FORWARD = """
import sys, time, torch
from glmkit.models.esm2.model import ESM2, ESM2Config
from glmkit.resources import keep_freed_memory
if "malloc" in sys.argv: keep_freed_memory()
import glmkit.models.layers as layers
if "mkl" in sys.argv: layers.onednn_fp32_gemms = lambda: False
if "onednn" in sys.argv: layers.onednn_fp32_gemms = lambda: True
torch.set_num_threads(2)
torch.manual_seed(0)
model = ESM2(ESM2Config(num_layers=12, embed_dim=480, attention_heads=20)).eval()
tokens = torch.randint(4, 24, (13, 302))
with torch.inference_mode():
    for _ in range(2): model(tokens)
    t = time.perf_counter()
    for _ in range(5): model(tokens)
print((time.perf_counter() - t) / 5)
"""


def esm_forward(*flags) -> float:
    out = subprocess.run([sys.executable, "-c", ESM_FORWARD, *flags], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def malloc(repeats: int) -> None:
    report("malloc", *alternate(lambda: esm_forward(), lambda: esm_forward("malloc"), repeats))


def arenas(repeats: int) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from scale import build, measured

    folder = ROOT / "bench" / "out" / "scale" / "100000"
    elements, embeddings = build(100_000, folder)
    glm = folder / "glm"
    if not (glm / "checkpoint").exists():
        subprocess.run([sys.executable, "-m", "glmkit", "pretrain", elements, "-e", embeddings, "-o", glm, "--force",
                        "-q", "--preset", "tiny", "--max-steps", "20", "--threads", "2"], check=True)

    def run(one_arena: bool) -> tuple[float, float]:
        code = ("import sys\nimport glmkit.resources as memory\nkeep = memory.keep_freed_memory\n"
                f"memory.keep_freed_memory = lambda: keep(one_arena={one_arena})\n"
                f"sys.argv = ['glmkit', 'contextualize', {str(elements)!r}, '-e', {str(embeddings)!r}, '-m', "
                f"{str(glm)!r}, '-o', {str(folder / 'arenas.zarr')!r}, '--force', '-q', '--threads', '2']\n"
                "from glmkit.cli import main\nmain()\n")
        return measured([sys.executable, "-c", code])

    without, with_ = [], []
    for _ in range(repeats):
        without.append(run(False))
        with_.append(run(True))
    report("arenas", min(m for m, _ in without), min(m for m, _ in with_), "MB")
    report("  (time)", min(s for _, s in without), min(s for _, s in with_))


# -- call ------------------------------------------------------------------------------------------------------

def _genome(out: Path) -> Path:
    fasta = out / "cdiph.fna"
    if not fasta.exists():
        fasta.write_bytes(gzip.decompress((PYRODIGAL / "GCF_001457455.1_NCTC11397_genomic.fna.gz").read_bytes()))
    return fasta


def call_time(fasta: Path, out: Path, hook: str = "") -> float:
    code = textwrap.dedent(hook) + (f"\nimport sys\nsys.argv = ['glmkit', 'call', {str(fasta)!r}, '-o', "
                                    f"{str(out / 'o.zarr')!r}, '-p', 'single', '-t', '2', '-q', '--force']\n"
                                    "from glmkit.cli import main\nmain()\n")
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - t


def gc_trick(repeats: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        fasta = _genome(Path(tmp))
        no_freeze = "import gc\ngc.freeze = lambda: None\ngc.unfreeze = lambda: None\n"
        report("gc", *alternate(lambda: call_time(fasta, Path(tmp), no_freeze), lambda: call_time(fasta, Path(tmp)),
                                repeats))


def imports(repeats: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        fasta = _genome(Path(tmp))
        report("imports", *alternate(lambda: call_time(fasta, Path(tmp), "import numpy, zarr\n"),
                                     lambda: call_time(fasta, Path(tmp)), repeats))


def zarr_gather(repeats: int) -> None:
    from glmkit.commands.call import CallOptions, run_call
    from glmkit.io import elements as elements_module
    from glmkit.io.elements import ElementStore, ElementStoreWriter

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run_call([str(_genome(tmp))], str(tmp / "el.zarr"), options=CallOptions(mode="single", threads=2))
        batch = ElementStore(tmp / "el.zarr").read()

        def write(gathered: bool) -> float:
            shutil.rmtree(tmp / "w.zarr", ignore_errors=True)
            t = time.perf_counter()
            writer = ElementStoreWriter(tmp / "w.zarr", {}, [])
            writer.write(batch)
            if gathered:
                writer.close()
            else:  # one column after another
                real = elements_module.close_writers
                elements_module.close_writers = lambda ws: [w.close() for w in ws]
                try:
                    writer.close()
                finally:
                    elements_module.close_writers = real
            return time.perf_counter() - t

        report("zarr-gather", *alternate(lambda: write(False), lambda: write(True), repeats))


# -- pretrain --------------------------------------------------------------------------------------------------

def dropout(repeats: int) -> None:
    import torch

    from glmkit.models.layers import Dropout

    torch.set_num_threads(2)
    x = torch.randn(960, 512)  # one step's activations at one dropout of the small gLM (32 rows x 30 genes)
    ours = Dropout(0.1).train()

    def one_draw_each(x):  # the layer before: one 24-bit integer (one mt19937 draw) per element
        keep = torch.randint(0, 1 << 24, x.shape, dtype=torch.int32) >= round(0.1 * (1 << 24))
        return x * keep * (1.0 / 0.9)

    def timed(f) -> float:
        return ms_per_call(f, 50)

    report("dropout", *alternate(lambda: timed(lambda: torch.nn.functional.dropout(x, 0.1, True)),
                                 lambda: timed(lambda: ours(x)), repeats), unit="ms")
    report("  vs 24-bit", *alternate(lambda: timed(lambda: one_draw_each(x)), lambda: timed(lambda: ours(x)),
                                     repeats), unit="ms")
    kept = (ours(torch.ones(4_000_000)) != 0).float().mean().item()
    print(f"{'':<12} share kept {kept:.4f} (expected 0.9000)")


# _probabilities before the change: the softmax in the scores' dtype (run here, and as the command's preamble)
BF16_SOFTMAX = """
import torch
import glmkit.models.glm.model as glm

def bf16_softmax(self, q, k, bias):
    return torch.softmax(q @ k.transpose(-1, -2) / self.head_dim ** 0.5 + bias, dim=-1)
"""


def softmax(repeats: int) -> None:
    import torch

    from glmkit.models.glm.model import SelfAttention, preset

    torch.set_num_threads(2)
    cfg = preset("small", input_dim=1281, label_dim=100)
    attention = SelfAttention(cfg)
    B, nh, L, hd = 32, cfg.num_heads, 30, cfg.hidden_size // cfg.num_heads
    q, k = (torch.randn(B, nh, L, hd, dtype=torch.bfloat16, requires_grad=True) for _ in range(2))
    bias = torch.randn(B, nh, L, L, dtype=torch.bfloat16)
    grad = torch.randn(B, nh, L, L, dtype=torch.bfloat16)
    before = {}
    exec(BF16_SOFTMAX, before)

    def timed(probabilities) -> float:
        return ms_per_call(lambda: probabilities(attention, q, k, bias).backward(grad), 50)

    report("softmax", *alternate(lambda: timed(before["bf16_softmax"]), lambda: timed(SelfAttention._probabilities),
                                 repeats), unit="ms")
    preamble = BF16_SOFTMAX + "glm.SelfAttention._probabilities = bf16_softmax\n"
    report("softmax bf16", *alternate(lambda: _pretrain_step_seconds("bf16", preamble),
                                      lambda: _pretrain_step_seconds("bf16", ""), repeats))


def fused_adamw(repeats: int) -> None:
    import torch

    from glmkit.models.glm.model import GLM, preset
    from glmkit.train import parameter_groups

    torch.set_num_threads(2)
    model = GLM(preset("small", input_dim=1281, label_dim=100))
    for p in model.parameters():
        p.grad = torch.randn_like(p)

    def timed(fused: bool) -> float:
        opt = torch.optim.AdamW(parameter_groups(model, 0.01), lr=1e-4, fused=fused, foreach=None if fused else True)
        return ms_per_call(opt.step, 10)

    report("fused-adamw", *alternate(lambda: timed(False), lambda: timed(True), repeats), unit="ms")


def _pretrain_step_seconds(precision: str, preamble: str) -> float:
    """Seconds a step of `glmkit pretrain` (small preset, bench/pretrain.py's corpus of real sub-contig lengths,
    40 steps, the first 5 untimed), from the command's log.tsv, in a child process that runs ``preamble`` first."""
    sys.path.insert(0, str(ROOT / "bench"))
    from pretrain import OUT, SKIP, run_glmkit
    from realistic_corpus import build

    subcontigs, embeddings = build(ROOT / "bench" / "out" / "corpus")
    OUT.mkdir(parents=True, exist_ok=True)
    settings = argparse.Namespace(preset="small", batch=32, threads=2)
    rows = run_glmkit(subcontigs, embeddings, OUT / "trick", settings, "--max-steps", 40, "--precision", precision,
                      preamble=preamble)
    seconds = [float(row["seconds"]) for row in rows]
    return (seconds[-1] - seconds[SKIP - 1]) / (len(seconds) - SKIP)


def blas_beside_torch(repeats: int) -> None:
    numpy_threads = "import contextlib\nimport glmkit.resources as p\np.one_blas_thread = contextlib.nullcontext"
    for precision in ("fp32", "bf16"):
        report(f"blas {precision}", *alternate(lambda: _pretrain_step_seconds(precision, numpy_threads),
                                               lambda: _pretrain_step_seconds(precision, ""), repeats))


def onednn_linear(repeats: int) -> None:
    from glmkit.models.layers import onednn_fp32_gemms

    print(f"{'':<12} this CPU selects {'oneDNN' if onednn_fp32_gemms() else 'MKL'} for fp32 linears; "
          "both forced here")
    with_mkl = "import glmkit.models.layers as l\nl.onednn_fp32_gemms = lambda: False"
    with_onednn = "import glmkit.models.layers as l\nl.onednn_fp32_gemms = lambda: True"
    report("onednn train", *alternate(lambda: _pretrain_step_seconds("fp32", with_mkl),
                                      lambda: _pretrain_step_seconds("fp32", with_onednn), repeats))
    report("onednn embed", *alternate(lambda: esm_forward("mkl"), lambda: esm_forward("onednn"), repeats))


def attention_dropout(repeats: int) -> None:
    sdpa_dropout = ("import torch.nn.functional as F\nimport glmkit.models.glm.model as glm\n"
                    "glm.SelfAttention._attend = lambda self, q, k, v, bias: F.scaled_dot_product_attention(\n"
                    "    q, k, v, attn_mask=bias, dropout_p=self.dropout.p if self.training else 0.0)")
    for precision in ("fp32", "bf16"):
        report(f"attn-drop {precision}", *alternate(lambda: _pretrain_step_seconds(precision, sdpa_dropout),
                                                    lambda: _pretrain_step_seconds(precision, ""), repeats))


def _boolean_mask_attention(self, x, real, allowed, need_weights=False):
    """SelfAttention.forward as it was: a boolean-mask scatter into rows and gather out of them (what the
    gpu-indexing trick replaced); need_weights omitted."""
    import math

    import torch
    import torch.nn.functional as F

    B, L = real.shape
    N, H = x.shape
    qkv = F.linear(x, torch.cat([self.query.weight, self.key.weight, self.value.weight]),
                   torch.cat([self.query.bias, self.key.bias, self.value.bias]))
    rows = qkv.new_zeros(B, L, 3 * H)
    rows[real] = qkv
    q, k, v = rows.view(B, L, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
    pos = torch.arange(L, device=x.device)
    distance = (pos[:, None] - pos[None, :]).clamp(-(self.max_pos - 1), self.max_pos - 1)
    E = self.distance_embedding(distance + self.max_pos - 1).to(q.dtype)
    rel = torch.einsum("bhld,lrd->bhlr", q, E) + torch.einsum("bhrd,lrd->bhlr", k, E)
    bias = (rel / math.sqrt(self.head_dim)).masked_fill(~allowed, torch.finfo(q.dtype).min)
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=self.dropout.p if self.training else 0.0)
    return y.transpose(1, 2)[real].reshape(N, H), None


def gpu_indexing(repeats: int) -> None:
    import types

    import torch

    from glmkit.models import glm
    from glmkit.train import parameter_groups

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_num_threads(2)
    torch.manual_seed(0)
    B, L = 32, 30
    model = glm.GLM(glm.preset("paper" if device.type == "cuda" else "small", input_dim=1281, label_dim=100))
    model = model.to(device).train()
    optimizer = torch.optim.AdamW(parameter_groups(model, 0.01), lr=1e-4, fused=True)
    features, segments = torch.randn(B, L, 1281, device=device), torch.ones(B, L, dtype=torch.long, device=device)
    masked = torch.rand(B, L, device=device) < 0.15
    labels = torch.randn(B, L, 99, device=device)

    def boolean_masks(on: bool) -> None:  # the blocks' and the model's gathers as they were, or as they are
        def encode(self, features, segments, need_weights=False, layers=None):
            real = segments > 0
            allowed = ((segments[:, :, None] == segments[:, None, :]) & real[:, None, :])[:, None]
            x = self.dropout(self.input_norm(self.input_projection(features[real]) + self.token_type))
            for block in self.blocks:
                x, _ = block(x, real, allowed)
            out = x.new_zeros(*real.shape, x.shape[1])
            out[real] = x
            return out, None
        for block in model.blocks:
            block.attention.forward = types.MethodType(_boolean_mask_attention, block.attention) if on else \
                types.MethodType(glm.SelfAttention.forward, block.attention)
        model.encode = types.MethodType(encode if on else glm.GLM.encode, model)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            _, p, _, _ = model(features, segments, only=masked)
            loss = ((p.float()[:, 0, :99] - labels[masked]) ** 2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def timed(on: bool) -> float:
        boolean_masks(on)
        for _ in range(3):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(10):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - t) / 10 * 1000

    print(f"{'':<12} {torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU (small preset)'}")
    report("gpu-indexing", *alternate(lambda: timed(True), lambda: timed(False), repeats), unit="ms")


def glm2_mask(repeats: int) -> None:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(2)
    B, H, L, hd = 3, 8, 1024, 32  # one layer of the small gLM2 on 3 rows of 1,024 tokens, two of them padded
    q, k, v = (torch.randn(B, H, L, hd, requires_grad=True) for _ in range(3))
    real = torch.ones(B, L, dtype=torch.bool)
    real[1, 700:], real[2, 300:] = False, False
    expanded = real[:, None, None, :].expand(B, H, L, L)      # the published forward's mask, one per head
    broadcast = (real[:, None, :] & real[:, :, None] | torch.eye(L, dtype=torch.bool))[:, None]   # glmkit's

    def timed(mask) -> float:
        t = time.perf_counter()
        F.scaled_dot_product_attention(q, k, v, attn_mask=mask).sum().backward()
        return (time.perf_counter() - t) * 1000

    report("glm2-mask", *alternate(lambda: timed(expanded), lambda: timed(broadcast), repeats), unit="ms")


# -- jacobian --------------------------------------------------------------------------------------------------

def jacobian_passes(repeats: int) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from jacobian import OUT, model, pair

    OUT.mkdir(parents=True, exist_ok=True)
    weights = OUT / "esm2_t6_random.pt"
    if not weights.exists():
        model(weights)
    fasta = pair(120, OUT / "pair_120.fasta")

    def run(side_by_side: bool) -> float:
        code = (f"import sys\nimport glmkit.commands.jacobian as j\nj.PASSES_SIDE_BY_SIDE = {side_by_side}\n"
                f"sys.argv = ['glmkit', 'jacobian', {str(fasta)!r}, '-m', {str(weights)!r}, '-o', "
                f"{str(OUT / 'passes.npy')!r}, '--force', '-q', '--threads', '2']\n"
                "from glmkit.cli import main\nmain()\n")
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        return time.perf_counter() - t

    report("jacobian-passes", *alternate(lambda: run(False), lambda: run(True), repeats))


TRICKS = {"malloc": malloc, "arenas": arenas, "gc": gc_trick, "imports": imports, "zarr-gather": zarr_gather,
          "dropout": dropout, "softmax": softmax, "fused-adamw": fused_adamw, "blas-beside-torch": blas_beside_torch,
          "onednn-linear": onednn_linear, "attention-dropout": attention_dropout,
          "gpu-indexing": gpu_indexing, "glm2-mask": glm2_mask,
          "jacobian-passes": jacobian_passes}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tricks", nargs="*", metavar="TRICK", help=f"any of {', '.join(TRICKS)} [default: all]")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    unknown = [t for t in args.tricks if t not in TRICKS]
    if unknown:
        parser.error(f"unknown trick {unknown[0]}; choose from {', '.join(TRICKS)}")
    args.tricks = args.tricks or list(TRICKS)
    print(f"each trick without and with it, alternating, best of {args.repeats}")
    for name in args.tricks:
        TRICKS[name](args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
