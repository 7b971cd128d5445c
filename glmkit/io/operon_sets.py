"""Known operons, as `glmkit operons fit/eval --known` reads them.

Two formats, told apart by their first lines:

- RegulonDB's OperonSet.txt (tab-separated, '#' comments): operon name, left,
  right, strand (forward/reverse), number of genes, gene names or Blattner
  numbers (comma-separated), evidence, confidence. Read as operons: lists of
  gene names.
- a TSV of gene pairs with a header holding `gene_a`, `gene_b`, `label`
  (1 = same operon, 0 = not): gene names, locus tags or element ids.

And the annotation (GFF3 with CDS rows) that carries gene names to coordinates:
each CDS is known by its `gene`, `locus_tag`, `Name`, `gene_synonym` values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from glmkit.errors import GlmkitError
from glmkit.io.files import InputFile


@dataclass
class KnownOperons:
    path: str
    operons: list[list[str]] | None = None          # RegulonDB: gene names per operon
    pairs: list[tuple[str, str, int]] | None = None  # TSV: (gene a, gene b, label)


def read_known_operons(path: str) -> KnownOperons:
    from glmkit.io.tsv import text_lines

    source = InputFile(path)
    body = [(n, line) for n, line in text_lines(source) if line.strip() and not line.startswith("#")]
    if not body:
        raise GlmkitError(f"{source.display}: no operons in it")
    first = body[0][1].split("\t")
    if {"gene_a", "gene_b", "label"} <= set(first):
        col = {name: i for i, name in enumerate(first)}
        pairs = []
        for n, line in body[1:]:
            f = line.split("\t")
            if len(f) != len(first):
                raise GlmkitError(f"{source.display}: line {n}: {len(f)} fields, header has {len(first)}")
            if f[col["label"]] not in ("0", "1"):
                raise GlmkitError(f"{source.display}: line {n}: label {f[col['label']]!r} is not 0 or 1")
            pairs.append((f[col["gene_a"]], f[col["gene_b"]], int(f[col["label"]])))
        return KnownOperons(source.display, pairs=pairs)
    operons = []
    first_fields = body[0][1].split("\t")
    if len(first_fields) > 3 and first_fields[3] not in ("forward", "reverse") and \
            not first_fields[1].strip().isdigit():
        body = body[1:]   # RegulonDB's column-header line, left uncommented in some releases
    for n, line in body:
        f = line.split("\t")
        if len(f) < 6 or f[3] not in ("forward", "reverse"):
            raise GlmkitError(f"{source.display}: line {n}: neither RegulonDB OperonSet (operon, left, right, "
                              f"forward/reverse, count, genes, ...) nor a TSV with gene_a, gene_b, label columns")
        genes = [g.strip() for g in f[5].split(",") if g.strip()]
        try:
            count = int(f[4])
        except ValueError:
            raise GlmkitError(f"{source.display}: line {n}: gene count {f[4]!r} is not a number") from None
        if count != len(genes):
            raise GlmkitError(f"{source.display}: line {n}: operon {f[0]} says {count} genes and lists {len(genes)}")
        operons.append(genes)
    return KnownOperons(source.display, operons=operons)


@dataclass
class AnnotatedCDS:
    seqid: str
    start: int
    end: int
    strand: int
    names: tuple[str, ...]

    @property
    def stop(self) -> int:
        """The stop codon's outer coordinate: what a gene caller agrees on even when it picks another start."""
        return self.end if self.strand > 0 else self.start


def read_annotation(path: str) -> list[AnnotatedCDS]:
    from glmkit.io.gff import read_gff3

    found = []
    for r in read_gff3(InputFile(path), {"CDS"}):
        a = r.attributes
        names = [a.get("gene"), a.get("locus_tag"), a.get("Name"), a.get("old_locus_tag")]
        names += (a.get("gene_synonym") or "").split(",")
        found.append(AnnotatedCDS(r.seqid, r.start, r.end, 1 if r.strand == "+" else -1,
                                  tuple(n.strip() for n in names if n and n.strip())))
    if not found:
        raise GlmkitError(f"{Path(path)}: no CDS rows in this annotation")
    return found
