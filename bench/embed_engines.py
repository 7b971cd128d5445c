#!/usr/bin/env python3
"""Benchmark: `glmkit embed` against the fastest ESM2 engines on CPU, same proteins, same weights, one run.

    python bench/embed_engines.py [--shapes 8M,35M,150M,650M] [--proteins 20] [--threads 2] [--repeats 2]
                                  [--esm-cpp-python PATH]

Engines, each in its own process, alternating (every engine once per repeat, best repeat kept):
  glmkit fp32, glmkit bf16   the `glmkit embed` command itself (--precision fp32 / bf16)
  esm-cpp fp32, esm-cpp int8 esm-cpp's Model.load_from_safetensors, forward_batch; int8: its quantize_weights()
                             (W8A8 on AMX/VNNI), the in-memory path of its own bench/compare.py
  transformers sdpa          EsmModel(attn_implementation="sdpa"), batches of <= 4096 tokens by length
Every engine reads the same model.safetensors, written by transformers' save_pretrained from a random-weight
EsmForMaskedLM of the named shape (real weights cannot be downloaded here; speed does not depend on their
values, so neither does this table, but the accuracy columns are of random weights). A protein's embedding is
the mean of the last layer over its residues, as glmkit and extract.py compute it.

Proteins: the E. coli K-12 proteome called by `glmkit call --mode single` (../shared/data, else the pyrodigal
wheel's C. diphtheriae), every k-th protein of at most 1,022 residues so that no engine truncates.

esm-cpp needs numpy < 2: install it in a venv of its own and name its python with --esm-cpp-python
(python -m venv /tmp/esmcpp && /tmp/esmcpp/bin/pip install esm-cpp==0.2.1).

Columns: wall (the whole process: loading, computing, writing), compute (the forward passes: glmkit's own log
line, the engines' timers around their forward calls), proteins/s and residues/s of compute, peak RSS, and the
worst cosine and largest |difference| of a protein's embedding against transformers fp32.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import subprocess
import sys
import time
from importlib.resources import files
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
ECOLI = ROOT.parent / "shared" / "data" / "ecoli_k12_mg1655.fna.gz"
SHAPES = {"8M": (6, 320, 20), "35M": (12, 480, 20), "150M": (30, 640, 20), "650M": (33, 1280, 20)}
MAX_RESIDUES = 1022


# -- workers: each engine in its own process ---------------------------------------------------------------------

def read_fasta(path: Path) -> list[tuple[str, str]]:
    out = []
    for record in path.read_text().split(">")[1:]:
        name, _, seq = record.partition("\n")
        out.append((name.split()[0], seq.replace("\n", "")))
    return out


def worker_esm_cpp(folder: Path, fasta: Path, out: Path, threads: int, int8: bool) -> dict:
    import esm_cpp

    assert esm_cpp.Model.num_threads == threads, (esm_cpp.Model.num_threads, threads)  # from OMP_NUM_THREADS
    model = esm_cpp.Model.load_from_safetensors(str(folder / "model.safetensors"))
    if int8:
        model.quantize_weights()
    tokenizer = esm_cpp.Tokenizer()
    proteins = read_fasta(fasta)
    ids = [np.asarray(tokenizer.encode(s), dtype=np.int32) for _, s in proteins]
    # embeddings need the hidden states, which esm-cpp returns one sequence at a time; its packed variable-length
    # batch (forward_batch) returns logits only: timed too, as its fastest path, though it gives no embedding
    start = time.perf_counter()
    hidden = [model.forward_with_hidden_states(x)[1][-1] for x in ids]
    compute = time.perf_counter() - start
    start = time.perf_counter()
    model.forward_batch(ids)
    packed = time.perf_counter() - start
    np.save(out, np.stack([h[1:-1].mean(0) for h in hidden]).astype(np.float32))
    return {"compute": compute, "packed_logits": packed}


def worker_transformers(folder: Path, fasta: Path, out: Path, threads: int, max_tokens: int = 4096) -> dict:
    import torch
    from transformers import EsmModel, EsmTokenizer

    torch.set_num_threads(threads)
    model = EsmModel.from_pretrained(folder, attn_implementation="sdpa", add_pooling_layer=False).eval()
    tokenizer = EsmTokenizer.from_pretrained(folder)
    proteins = read_fasta(fasta)
    order = sorted(range(len(proteins)), key=lambda i: len(proteins[i][1]))
    result = [None] * len(proteins)
    compute, batch = 0.0, []

    def flush():
        nonlocal compute
        encoded = tokenizer([proteins[i][1] for i in batch], return_tensors="pt", padding=True)
        start = time.perf_counter()
        with torch.inference_mode():
            hidden = model(**encoded).last_hidden_state
        compute += time.perf_counter() - start
        for row, i in enumerate(batch):
            n = len(proteins[i][1])
            result[i] = hidden[row, 1:n + 1].mean(0).numpy()

    for i in order:
        if batch and (len(batch) + 1) * (len(proteins[i][1]) + 2) > max_tokens:
            flush()
            batch = []
        batch.append(i)
    flush()
    np.save(out, np.stack(result).astype(np.float32))
    return {"compute": compute}


def worker_glmkit(folder: Path, fasta: Path, out: Path, threads: int, precision: str) -> dict:
    store = out.with_suffix(".zarr")
    log = subprocess.run([sys.executable, "-m", "glmkit", "embed", fasta, "-m", folder, "-o", store, "--threads", str(threads),
                          "--precision", precision, "--force"], capture_output=True, text=True)
    if log.returncode:
        raise SystemExit(log.stderr)
    # embed: N proteins in X s (...): the forward passes, as the command times them
    compute = float(re.search(r"proteins in ([0-9.]+) s", log.stderr).group(1))
    from glmkit.io.embeddings import EmbeddingStore
    from glmkit.io.embeddings import sequence_hash

    embeddings = EmbeddingStore(store)
    rows = embeddings.get([sequence_hash(s.encode()) for _, s in read_fasta(fasta)])
    np.save(out, np.asarray(rows, dtype=np.float32))
    return {"compute": compute}


def run_worker(args) -> None:
    folder, fasta, out = Path(args.folder), Path(args.fasta), Path(args.out)
    if args.worker in ("esm-cpp fp32", "esm-cpp int8"):
        found = worker_esm_cpp(folder, fasta, out, args.threads, args.worker.endswith("int8"))
    elif args.worker == "transformers sdpa":
        found = worker_transformers(folder, fasta, out, args.threads)
    else:
        found = worker_glmkit(folder, fasta, out, args.threads, args.worker.split()[1])
    print(json.dumps(found))


# -- the driver ----------------------------------------------------------------------------------------------------

def proteins(out: Path, n: int) -> Path:
    genome = ECOLI if ECOLI.exists() else files("pyrodigal.tests") / "data" / "GCF_001457455.1_NCTC11397_genomic.fna.gz"
    (out / "genome.fna").write_bytes(gzip.decompress(Path(genome).read_bytes()))
    subprocess.run([sys.executable, "-m", "glmkit", "call", out / "genome.fna", "-o", out / "genome.zarr", "-a", out / "all.faa", "-p",
                    "single", "-q", "--force"], check=True)
    usable = [(name, seq.rstrip("*")) for name, seq in read_fasta(out / "all.faa") if len(seq.rstrip("*")) <= MAX_RESIDUES]
    every = max(1, len(usable) // n)
    chosen = usable[::every][:n]
    (out / "proteins.faa").write_text("".join(f">p{k}\n{seq}\n" for k, (_, seq) in enumerate(chosen)))
    return out / "proteins.faa"


def model_folder(out: Path, shape: str) -> Path:
    folder = out / f"esm2_{shape}"
    if (folder / "model.safetensors").exists():
        return folder
    import torch
    from transformers import EsmConfig, EsmForMaskedLM, EsmTokenizer

    layers, dim, heads = SHAPES[shape]
    config = EsmConfig(vocab_size=33, hidden_size=dim, num_hidden_layers=layers, num_attention_heads=heads,
                       intermediate_size=4 * dim, max_position_embeddings=1026, position_embedding_type="rotary",
                       token_dropout=True, mask_token_id=32, pad_token_id=1, emb_layer_norm_before=False,
                       layer_norm_eps=1e-5)
    torch.manual_seed(0)
    EsmForMaskedLM(config).save_pretrained(folder)
    # the published facebook/esm2 files (saved by transformers 4.x) carry each layer's rotary inv_freq buffer and
    # name LayerNorms' tensors weight/bias; transformers 5 writes neither (gamma/beta, no buffer), and esm-cpp
    # reads only the published names: the file is given them here, values untouched
    from safetensors.torch import load_file, save_file

    weights = {k.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias"): v
               for k, v in load_file(folder / "model.safetensors").items()}
    head = dim // heads
    inv_freq = 1.0 / (10000 ** (torch.arange(0, head, 2, dtype=torch.int64).float() / head))
    for k in range(layers):
        weights.setdefault(f"esm.encoder.layer.{k}.attention.self.rotary_embeddings.inv_freq", inv_freq.clone())
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    vocab = out / "vocab.txt"
    vocab.write_text("\n".join(["<cls>", "<pad>", "<eos>", "<unk>", *"LAGVSERTIDPKQNFYMHWCXBUZO", ".", "-",
                                "<null_1>", "<mask>"]) + "\n")
    EsmTokenizer(str(vocab)).save_pretrained(folder)
    return folder


def measure(engine: str, python: str, folder: Path, fasta: Path, out: Path, threads: int) -> dict:
    target = out / f"{folder.name}_{engine.replace(' ', '_')}.npy"
    start = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-f", "%M", python, __file__, "--worker", engine, "--folder", folder,
                           "--fasta", fasta, "--out", target, "--threads", str(threads)],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{engine}: {done.stderr[-2000:]}")
    found = json.loads(done.stdout.strip().splitlines()[-1])
    found.update(wall=wall, rss_mb=int(done.stderr.strip().splitlines()[-1]) / 1024, embeddings=np.load(target))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="8M,35M,150M,650M")
    parser.add_argument("--proteins", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--esm-cpp-python", help="a python with esm-cpp installed (it needs numpy < 2)")
    parser.add_argument("--engines", default="glmkit fp32,glmkit bf16,esm-cpp fp32,esm-cpp int8,transformers sdpa")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "embed_engines")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--fasta", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker(args)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    fasta = proteins(args.out, args.proteins)
    records = read_fasta(fasta)
    residues = sum(len(s) for _, s in records)
    engines = [e for e in args.engines.split(",") if e]
    if not args.esm_cpp_python:
        engines = [e for e in engines if not e.startswith("esm-cpp")]
        print("esm-cpp: not measured (no --esm-cpp-python)")
    flags = sorted(set(re.findall(r"\b(avx512\w*|amx\w*|avx2)\b", Path("/proc/cpuinfo").read_text())))
    print(f"{len(records)} proteins, {residues:,} residues; {args.threads} threads; CPU flags: {' '.join(flags)}")
    for shape in args.shapes.split(","):
        folder = model_folder(args.out, shape)
        best: dict[str, dict] = {}
        for _ in range(args.repeats):
            for engine in ["transformers sdpa", *[e for e in engines if e != "transformers sdpa"]]:
                python = args.esm_cpp_python if engine.startswith("esm-cpp") else sys.executable
                found = measure(engine, python, folder, fasta, args.out, args.threads)
                if engine not in best or found["compute"] < best[engine]["compute"]:
                    best[engine] = found
        reference = best["transformers sdpa"]["embeddings"]
        print(f"\nesm2 {shape} shape ({SHAPES[shape][0]} layers, dim {SHAPES[shape][1]}), random weights, best of "
              f"{args.repeats}")
        print(f"{'engine':<18} {'wall s':>8} {'compute s':>10} {'prot/s':>8} {'res/s':>8} {'RSS MB':>8} "
              f"{'worst cos':>10} {'max|diff|':>10}")
        for engine, found in best.items():
            e = found["embeddings"]
            cos = (e * reference).sum(1) / np.linalg.norm(e, axis=1) / np.linalg.norm(reference, axis=1)
            print(f"{engine:<18} {found['wall']:8.1f} {found['compute']:10.2f} {len(records) / found['compute']:8.2f} "
                  f"{residues / found['compute']:8.0f} {found['rss_mb']:8.0f} {cos.min():10.6f} "
                  f"{np.abs(e - reference).max():10.2e}"
                  + (f"   (packed batch, logits only: {found['packed_logits']:.2f} s)" if "packed_logits" in found
                     else ""))
        for engine in ("glmkit fp32", "glmkit bf16"):
            for peer in ("esm-cpp fp32", "esm-cpp int8", "transformers sdpa"):
                if engine in best and peer in best:
                    print(f"  {engine} / {peer}: {best[peer]['compute'] / best[engine]['compute']:.2f}x (compute)"
                          + (f", {best[peer]['packed_logits'] / best[engine]['compute']:.2f}x against its packed "
                             f"logits" if "packed_logits" in best[peer] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
