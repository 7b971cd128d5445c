"""`glmkit genes`: the element store of an existing annotation (GFF3 + FASTA, GFF3 with ##FASTA, GenBank,
EMBL), the same store `glmkit call` writes, with the annotation's gene ids, names and products.

The reading is glmkit/io/annotations.py's, the element model genome/annotation.py's; this module reads the
inputs, writes the store (and the proteins, if asked) and reports what it counted.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict
from typing import Sequence

from glmkit.errors import GlmkitError, GlmkitUsageError
from glmkit.io.files import InputFile, atomic_outputs
from glmkit.log import plural, progress
from glmkit.options import GenesOptions

log = logging.getLogger("glmkit")
BATCH_BP = 20_000_000   # contigs are written in batches of about this many bp


def _batch(results):
    import numpy as np

    from glmkit.io.elements import ANNOTATION_COLUMNS, CONTIG_COLUMNS, ELEMENT_COLUMNS, ElementBatch, column_array

    columns = {**ELEMENT_COLUMNS, **ANNOTATION_COLUMNS}
    contigs = {n: column_array([c[n] for c, _ in results], d) for n, d in CONTIG_COLUMNS.items()}
    elements = {n: column_array([v for _, cols in results for v in cols.get(n, [""] * len(cols["id"]))], d)
                for n, d in columns.items()}
    return ElementBatch(contigs, elements, np.array([len(cols["id"]) for _, cols in results], dtype=np.int64))


def run_genes(annotations: Sequence[str], output: str, fastas: Sequence[str] = (), proteins: str | None = None,
              options: GenesOptions = GenesOptions(), force: bool = False) -> dict:
    """Write the element store of ``annotations`` (and their proteins as FASTA if ``proteins``); returns the
    counts (CDS, IGS, pseudogenes, RNA genes, isoforms, ...)."""
    from glmkit.genome.annotation import Translator, codon_table, contig_elements
    from glmkit.io.annotations import read_annotated_contigs
    from glmkit.io.elements import ElementStoreWriter

    sources = [InputFile(p) for p in annotations]
    fasta_sources = [InputFile(p) for p in fastas]
    for source in (*sources, *fasta_sources):
        source.check()
        if source.path == "-":
            raise GlmkitUsageError("glmkit genes reads its inputs twice (their format, then their features): "
                                   "give files, not '-'")
    try:
        codon_table(options.translation_table, f"--translation-table {options.translation_table}")
    except GlmkitError as e:
        raise GlmkitUsageError(str(e)) from None
    counts: Counter = Counter()
    translator = Translator(options.translation_table, counts)
    ids: dict[str, str] = {}
    inputs = [*sources, *fasta_sources]
    with atomic_outputs([output, proteins], force, [*annotations, *fastas]) as (store_path, proteins_path), \
            progress(desc="genes", unit="bp") as bar:
        writer = ElementStoreWriter(store_path, asdict(options), inputs)
        faa = open(proteins_path, "w") if proteins_path else None
        try:
            pending, bp = [], 0
            for contig in read_annotated_contigs(sources, fasta_sources):
                pending.append(contig_elements(contig, translator, counts, ids))
                bp += len(contig.sequence)
                bar.update(len(contig.sequence))
                if bp >= BATCH_BP:
                    _write(writer, faa, pending, counts)
                    pending, bp = [], 0
            if pending:
                _write(writer, faa, pending, counts)
            if not counts["contigs"]:
                raise GlmkitUsageError("no contigs in the inputs")
            writer.close(inputs=inputs, summary={"stats": dict(sorted(counts.items()))})
        finally:
            if faa:
                faa.close()
    _report(counts)
    return dict(counts)


def _write(writer, faa, pending, counts: Counter) -> None:
    """One batch of contigs into the store (and their proteins into the FASTA)."""
    from glmkit.io.elements import fasta_records
    from glmkit.io.fasta import write_fasta

    batch = _batch(pending)
    writer.write(batch)
    counts["igs"] += len(batch.elements["id"]) - batch.n_cds
    counts["bp"] += int(batch.contigs["length"].sum())
    if faa:
        write_fasta(faa, fasta_records(batch, "aa"))


def _report(counts: Counter) -> None:
    log.info(f"genes: {plural(counts['contigs'], 'contig')}, {counts['bp']:,} bp, {counts['cds']:,} CDS, "
             f"{counts['igs']:,} IGS")
    said = {"pseudogenes": "pseudogenes (not CDS: their bases are IGS)",
            "rna_genes": "RNA genes (tRNA, rRNA, ncRNA, ...: their bases are IGS)",
            "isoforms": "CDS that share a locus tag with another (ids <locus_tag>_<protein id>)",
            "partial_cds": "partial CDS",
            "translation_differs": "CDS whose /translation differs from their coordinates' (the file's kept)",
            "internal_stops": "CDS with a stop codon inside (read as X)",
            "origin_spanning_cds_left_out": "CDS across the origin of a circular contig, left out"}
    for key, text in said.items():
        if counts[key]:
            log.info(f"genes: {counts[key]:,} {text}")
    for key in sorted(k for k in counts if k.startswith("other_")):
        log.info(f"genes: {counts[key]:,} {key[6:]} features not read as genes")
