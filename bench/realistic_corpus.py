"""A gLM training corpus with real sub-contig lengths, for the training benchmarks.

    from realistic_corpus import build   # (bench scripts import it; python bench/realistic_corpus.py OUT builds it)

Genes are called (`glmkit call`) in real genomes: E. coli K-12 from
../shared/data when present, cut into contigs of 1-150 kb (log-uniform, as a
metagenome's assembler leaves them), and the C. diphtheriae chromosome and the
three assemblies shipped in the pyrodigal wheel; then `glmkit filter
--glm-subcontigs` cuts the gLM's sub-contigs. The sub-contig lengths are
therefore what real genomes give (about nine in ten are exactly 30 genes).
The embedding store holds one row per distinct protein, keyed by the real
proteins' hashes, with random float16 values of ESM2-650M's width (1,280):
training speed does not depend on the values, and no trained ESM2 can be
downloaded where glmkit is developed.
"""

from __future__ import annotations

import gzip
import random
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
ECOLI = ROOT.parent / "shared" / "data" / "ecoli_k12_mg1655.fna.gz"
PYRODIGAL = files("pyrodigal.tests") / "data"
GENOMES = ("GCF_001457455.1_NCTC11397_genomic.fna.gz", "MIIJ01000039.fna.gz", "KK037166.fna.gz", "SRR492066.fna.gz")


def _sequence(path) -> str:
    with gzip.open(path, "rt") as fh:
        return "".join(line.strip() for line in fh if not line.startswith(">"))


def _assemblies(out: Path) -> Path:
    rng = random.Random(1)
    records = []
    if ECOLI.exists():
        genome, pos = _sequence(ECOLI), 0
        while pos < len(genome) - 1000:
            n = int(round(10 ** rng.uniform(3, 5.176)))
            records.append((f"ecoli_{pos + 1}", genome[pos:pos + n]))
            pos += n
    for name in GENOMES:
        records.append((name.split(".")[0], _sequence(PYRODIGAL / name)))
    fasta = out / "assemblies.fna"
    with open(fasta, "w") as fh:
        for name, seq in records:
            fh.write(f">{name}\n" + "\n".join(seq[i:i + 80] for i in range(0, len(seq), 80)) + "\n")
    return fasta


def random_embedding_store(elements: list[Path], out: Path, dim: int = 1280, seed: int = 0) -> Path:
    """One row per distinct protein of ``elements`` (real hashes), random float16 values."""
    from glmkit.io.elements import CDS, ElementStore
    from glmkit.io.embeddings import PlannedRows, ResumableEmbeddingWriter, sequence_hash

    hashes = {}
    for path in elements:
        for batch in ElementStore(path).batches():
            for aa, kind in zip(batch.elements["aa"], batch.elements["type"]):
                if kind == CDS:
                    hashes.setdefault(sequence_hash(aa), len(aa))
    model = {"name": "random_1280", "sha256": "0" * 64, "embed_dim": dim, "layer": 1, "max_residues": 1022,
             "long": "truncate", "pooling": "mean", "num_layers": 1, "attention_heads": 1, "source": "random"}
    planned = PlannedRows.in_memory(list(hashes), list(hashes.values()))
    writer = ResumableEmbeddingWriter(out, {}, [], planned, dim, "float16", model, 4096)
    rng = np.random.default_rng(seed)
    for k in writer.pending():
        rows = writer.rows(k)
        writer.write_chunk(k, rng.normal(size=(len(rows), dim)).astype(np.float16))
    writer.publish([])
    return out


def build(out: Path) -> tuple[Path, Path]:
    """(sub-contig element store, embedding store) under ``out``, made once."""
    out.mkdir(parents=True, exist_ok=True)
    elements, subcontigs, embeddings = out / "elements.zarr", out / "subcontigs.zarr", out / "embeddings.zarr"
    if not subcontigs.exists():
        fasta = _assemblies(out)
        glmkit = [sys.executable, "-m", "glmkit"]
        subprocess.run([*glmkit, "call", fasta, "-o", elements, "-q", "--force"], check=True)
        subprocess.run([*glmkit, "filter", elements, "-o", subcontigs, "--glm-subcontigs", "-q", "--force"], check=True)
    if not embeddings.exists():
        random_embedding_store([subcontigs], embeddings)
    return subcontigs, embeddings


def build_omg(out: Path) -> Path:
    """The same genomes' element store after the OMG corpus rules (`glmkit filter`, no gLM sub-contigs): what
    gLM2 trains on."""
    build(out)
    omg = out / "omg.zarr"
    if not omg.exists():
        subprocess.run([sys.executable, "-m", "glmkit", "filter", out / "elements.zarr", "-o", omg, "-q", "--force"],
                       check=True)
    return omg


def subcontig_lengths(subcontigs: Path) -> np.ndarray:
    """Genes per sub-contig of a filter --glm-subcontigs store."""
    from glmkit.io.elements import CDS, ElementStore

    lengths = []
    for batch in ElementStore(subcontigs).batches():
        types = batch.elements["type"]
        lengths += [int((types[a:b] == CDS).sum()) for a, b in zip(batch.offsets[:-1], batch.offsets[1:])]
    return np.array(lengths)


if __name__ == "__main__":
    sc, emb = build(Path(sys.argv[1]))
    n = subcontig_lengths(sc)
    print(f"{len(n):,} sub-contigs, {np.mean(n == 30):.1%} of 30 genes, mean {n.mean():.1f}")
