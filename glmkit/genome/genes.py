"""Genes from contigs with Prodigal's algorithm (pyrodigal), torch-free: the gene finder for the options
(metagenomic bins, or single-genome training on a whole input), and one contig's elements (CDS, and IGS in
the gaps of the merged CDS intervals). `glmkit call` runs these on batches of contigs in threads.

numpy and the element store are imported inside the functions: together with zarr they cost ~0.3 s, which
`call`'s store thread pays while pyrodigal trains or finds genes without the GIL.
"""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING, Sequence

from glmkit.errors import GlmkitError, GlmkitUsageError
from glmkit.io.fasta import FastaRecord
from glmkit.io.files import InputFile
from glmkit.options import CallOptions

if TYPE_CHECKING:
    from glmkit.io.elements import ElementBatch

log = logging.getLogger("glmkit")
LINKER = b"TTAATTAATTAA"  # what Prodigal puts between the contigs of a genome when training on them


def gene_finder(options: CallOptions, training_info=None):
    import pyrodigal

    if options.translation_table is not None and options.translation_table not in pyrodigal.TRANSLATION_TABLES:
        raise GlmkitUsageError(f"--translation-table {options.translation_table}: not a genetic code Prodigal knows "
                               f"({', '.join(map(str, sorted(pyrodigal.TRANSLATION_TABLES)))})")
    if options.max_overlap > options.min_gene:
        raise GlmkitUsageError(f"--max-overlap ({options.max_overlap}) must not exceed --min-gene ({options.min_gene})")
    kwargs = dict(closed=options.closed, mask=options.mask, min_gene=options.min_gene,
                  min_edge_gene=options.min_edge_gene, max_overlap=options.max_overlap)
    if options.mode == "single":
        return pyrodigal.GeneFinder(training_info, meta=False, **kwargs)
    bins = None
    if options.translation_table is not None:
        chosen = [b for b in pyrodigal.METAGENOMIC_BINS if b.training_info.translation_table == options.translation_table]
        if not chosen:
            tables = sorted({b.training_info.translation_table for b in pyrodigal.METAGENOMIC_BINS})
            raise GlmkitUsageError(f"--translation-table {options.translation_table}: no metagenomic model uses it "
                                        f"(they use tables {', '.join(map(str, tables))}); use --mode single to train one")
        bins = pyrodigal.MetagenomicBins(chosen)
    return pyrodigal.GeneFinder(meta=True, metagenomic_bins=bins, **kwargs)


def train(records: Sequence[FastaRecord], source: InputFile, options: CallOptions) -> tuple[object, dict]:
    """A gene finder trained on the records, and the records encoded for pyrodigal by name (find_genes reuses
    them: encoding E. coli costs ~30 ms)."""
    from pyrodigal import MIN_SINGLE_GENOME, Sequence as EncodedSequence

    # Prodigal (and pyrodigal) train on the contigs joined by TTAATTAATTAA linkers, one after each contig
    total = sum(len(r.sequence) for r in records) + (len(LINKER) * len(records) if len(records) > 1 else 0)
    if total < MIN_SINGLE_GENOME:
        raise GlmkitError(f"{source.display}: {total:,} bp is too short to train on in single mode (Prodigal needs "
                          f"at least {MIN_SINGLE_GENOME:,} bp); use --mode meta for short inputs")
    finder = gene_finder(options)
    encoded = {r.name: EncodedSequence(r.sequence) for r in records}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            # pyrodigal joins several contigs itself, but only from raw sequences; one contig is passed encoded
            training = list(encoded.values()) if len(records) == 1 else [r.sequence for r in records]
            finder.train(*training, translation_table=options.translation_table or 11)
        except ValueError as e:
            raise GlmkitError(f"{source.display}: single-mode training failed: {e}") from e
    for w in caught:  # pyrodigal warns below 100 kb, as Prodigal does: pass it on as a log line
        log.warning(f"call: {source.display}: {w.message}")
    return finder, encoded


def contig_elements(name: str, length: int, genes, table: int) -> dict[str, list]:
    """The element columns of one contig: its genes in order, with IGS in the gaps of the merged CDS intervals."""
    from glmkit.genome.intergenic import contig_columns
    from glmkit.io.elements import CDS

    cds_rows = [{"id": f"{name}_{n}", "type": CDS, "strand": gene.strand, "start": gene.begin, "end": gene.end,
                 "partial_left": gene.partial_begin, "partial_right": gene.partial_end,
                 "translation_table": gene.translation_table, "start_type": gene.start_type,
                 "rbs_motif": str(gene.rbs_motif), "rbs_spacer": str(gene.rbs_spacer), "gc_content": gene.gc_cont,
                 "confidence": gene.confidence(), "score": gene.score, "cscore": gene.cscore,
                 "sscore": gene.sscore, "rscore": gene.rscore, "uscore": gene.uscore, "tscore": gene.tscore,
                 "nt": gene.sequence().encode(), "aa": gene.translate(include_stop=False).encode()}
                for n, gene in enumerate(genes, 1)]
    return contig_columns(name, length, cds_rows, table)


def call_contig(finder, record: FastaRecord, options: CallOptions, encoded=None) -> tuple[dict, dict]:
    genes = finder.find_genes(record.sequence if encoded is None else encoded)
    if options.mode == "single":
        model, table = "single", finder.training_info.translation_table
    else:
        model, table = genes.metagenomic_bin.description, genes.metagenomic_bin.training_info.translation_table
    from glmkit.io.elements import IGS

    cols = contig_elements(record.name, len(record.sequence), genes, table)
    for i, (kind, start, end) in enumerate(zip(cols["type"], cols["start"], cols["end"])):
        if kind == IGS:
            cols["nt"][i] = record.sequence[start - 1:end]
    contig = {"name": record.name, "length": len(record.sequence), "source": record.name, "source_start": 1,
              "source_end": len(record.sequence), "model": model, "translation_table": table}
    return contig, cols


def to_batch(results: Sequence[tuple[dict, dict]]) -> ElementBatch:
    import numpy as np

    from glmkit.io.elements import CONTIG_COLUMNS, ELEMENT_COLUMNS, ElementBatch, column_array

    contigs = {n: column_array([c[n] for c, _ in results], d) for n, d in CONTIG_COLUMNS.items()}
    elements = {n: column_array([v for _, cols in results for v in cols[n]], d) for n, d in ELEMENT_COLUMNS.items()}
    counts = np.array([len(cols["id"]) for _, cols in results], dtype=np.int64)
    return ElementBatch(contigs, elements, counts)
