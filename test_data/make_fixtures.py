"""Regenerate the small fixtures in test_data/ from genomes that ship inside the pyrodigal wheel.

    python test_data/make_fixtures.py

Deterministic: the same pyrodigal data gives byte-identical files.
"""

import gzip
from importlib.resources import files
from pathlib import Path

HERE = Path(__file__).parent
DATA = files("pyrodigal.tests") / "data"


def read(name: str) -> str:
    with gzip.open(DATA / name, "rt") as fh:
        return "".join(line.strip() for line in fh if not line.startswith(">"))


def wrap(seq: str, width: int) -> str:
    return "\n".join(seq[i:i + width] for i in range(0, len(seq), width)) + "\n"


def main() -> None:
    genome = read("MIIJ01000039.fna.gz")
    # 12 contigs of 5-60 kb cut at fixed places: a small multi-contig "assembly"
    lengths = [5_000, 60_000, 12_500, 30_000, 7_777, 45_000, 20_001, 9_000, 33_333, 15_000, 52_000, 18_000]
    contigs, pos = [], 1000
    for i, n in enumerate(lengths, 1):
        contigs.append((f"contig_{i} cut {pos + 1}-{pos + n} of MIIJ01000039", genome[pos:pos + n]))
        pos += n + 500
    clean = "".join(f">{h}\n{wrap(s, 60)}" for h, s in contigs)
    (HERE / "multi_contigs.fna").write_text(clean)

    # same contigs, as messy as real files get: lower case, CRLF, uneven line widths, gzip
    messy = []
    for k, (h, s) in enumerate(contigs):
        body = wrap(s.lower() if k % 2 else s, 37 + 11 * k).replace("\n", "\r\n")
        messy.append(f">{h}\r\n{body}")
    with gzip.GzipFile(HERE / "messy_contigs.fna.gz", "wb", mtime=0) as fh:
        fh.write("".join(messy).encode())

    # a gzip file cut in half: must be reported as truncated
    whole = (HERE / "messy_contigs.fna.gz").read_bytes()
    (HERE / "truncated.fna.gz").write_bytes(whole[: len(whole) // 2])

    # proteins (Prodigal's own output for SRR492066): what `call` must refuse
    with gzip.open(DATA / "SRR492066.meta.faa.gz", "rt") as fh:
        lines = fh.read().split(">")[1:6]
    (HERE / "proteins.faa").write_text("".join(">" + rec for rec in lines))


if __name__ == "__main__":
    main()
