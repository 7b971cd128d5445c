"""`glmkit call`: genes from contigs with pyrodigal, written as an element store.

Prodigal's algorithm through pyrodigal: metagenomic mode by default (the 50
pre-trained models, best one per contig), single-genome mode trained on each
input file. Contigs run in parallel threads (pyrodigal releases the GIL); the
output order is the input order whatever the thread count. Intergenic
sequences (IGS) are the gaps between merged CDS intervals, including the
stretches before the first and after the last gene.

numpy, zarr and the element store are imported inside the functions that run
after training: together they cost ~0.3 s, which the store thread pays while
pyrodigal trains or finds genes without the GIL (see _Outputs).
"""

from __future__ import annotations

import gc
import logging
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

from glmkit.errors import GlmkitError, GlmkitUsageError
from glmkit.io.fasta import FastaRecord, read_fasta, write_fasta
from glmkit.io.files import InputFile, atomic_outputs
from glmkit.io.gff import write_gff3
from glmkit.log import plural, progress
from glmkit.options import CallOptions

if TYPE_CHECKING:
    from glmkit.io.elements import ElementBatch

log = logging.getLogger("glmkit")

BATCH_BP = 20_000_000     # contigs are gene-called in batches of about this many bp ...
BATCH_CONTIGS = 20_000    # ... or this many contigs, whichever comes first
LINKER = b"TTAATTAATTAA"  # what Prodigal puts between the contigs of a genome when training on them


def _gene_finder(options: CallOptions, training_info=None):
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


def _train(records: Sequence[FastaRecord], source: InputFile, options: CallOptions) -> tuple[object, dict]:
    """A gene finder trained on the records, and the records encoded for pyrodigal by name (find_genes reuses
    them: encoding E. coli costs ~30 ms)."""
    from pyrodigal import MIN_SINGLE_GENOME, Sequence as EncodedSequence

    # Prodigal (and pyrodigal) train on the contigs joined by TTAATTAATTAA linkers, one after each contig
    total = sum(len(r.sequence) for r in records) + (len(LINKER) * len(records) if len(records) > 1 else 0)
    if total < MIN_SINGLE_GENOME:
        raise GlmkitError(f"{source.display}: {total:,} bp is too short to train on in single mode (Prodigal needs "
                          f"at least {MIN_SINGLE_GENOME:,} bp); use --mode meta for short inputs")
    finder = _gene_finder(options)
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
    from glmkit.io.elements import CDS, ELEMENT_COLUMNS, IGS

    cols: dict[str, list] = {n: [] for n in ELEMENT_COLUMNS}

    def add_igs(start: int, end: int, after: int) -> None:
        for key, value in (("id", f"{name}_igs{after}"), ("type", IGS), ("strand", 0), ("start", start),
                           ("end", end), ("partial_left", start == 1), ("partial_right", end == length),
                           ("translation_table", table), ("start_type", ""), ("rbs_motif", ""),
                           ("rbs_spacer", ""), ("aa", b"")):
            cols[key].append(value)
        for key in ("gc_content", "confidence", "score", "cscore", "sscore", "rscore", "uscore", "tscore"):
            cols[key].append(float("nan"))
        cols["nt"].append(None)  # filled in below from the contig sequence

    covered_to = 0  # right end of the merged CDS intervals so far
    for n, gene in enumerate(genes, 1):
        if gene.begin > covered_to + 1:
            add_igs(covered_to + 1, gene.begin - 1, n - 1)
        covered_to = max(covered_to, gene.end)
        for key, value in (("id", f"{name}_{n}"), ("type", CDS), ("strand", gene.strand), ("start", gene.begin),
                           ("end", gene.end), ("partial_left", gene.partial_begin),
                           ("partial_right", gene.partial_end), ("translation_table", gene.translation_table),
                           ("start_type", gene.start_type), ("rbs_motif", str(gene.rbs_motif)),
                           ("rbs_spacer", str(gene.rbs_spacer)), ("gc_content", gene.gc_cont),
                           ("confidence", gene.confidence()), ("score", gene.score), ("cscore", gene.cscore),
                           ("sscore", gene.sscore), ("rscore", gene.rscore), ("uscore", gene.uscore),
                           ("tscore", gene.tscore), ("nt", gene.sequence().encode()),
                           ("aa", gene.translate(include_stop=False).encode())):
            cols[key].append(value)
    if covered_to < length:
        add_igs(covered_to + 1, length, len(genes))
    return cols


def _call_contig(finder, record: FastaRecord, options: CallOptions, encoded=None) -> tuple[dict, dict]:
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


def _to_batch(results: Sequence[tuple[dict, dict]]) -> ElementBatch:
    import numpy as np

    from glmkit.io.elements import CONTIG_COLUMNS, ELEMENT_COLUMNS, ElementBatch, column_array

    contigs = {n: column_array([c[n] for c, _ in results], d) for n, d in CONTIG_COLUMNS.items()}
    elements = {n: column_array([v for _, cols in results for v in cols[n]], d) for n, d in ELEMENT_COLUMNS.items()}
    counts = np.array([len(cols["id"]) for _, cols in results], dtype=np.int64)
    return ElementBatch(contigs, elements, counts)


def _batches(records: Iterator[FastaRecord]) -> Iterator[list[FastaRecord]]:
    batch, bp = [], 0
    for record in records:
        batch.append(record)
        bp += len(record.sequence)
        if bp >= BATCH_BP or len(batch) >= BATCH_CONTIGS:
            yield batch
            batch, bp = [], 0
    if batch:
        yield batch


def _unique(records: Iterator[FastaRecord], source: InputFile, seen: dict[str, str]) -> Iterator[FastaRecord]:
    for record in records:
        if record.name in seen:
            raise GlmkitError(f"{source.display}: duplicate contig name '{record.name}' (first seen in {seen[record.name]})")
        seen[record.name] = source.display
        yield record


def _store_writer(*args):
    from glmkit.io.elements import ElementStoreWriter

    return ElementStoreWriter(*args)


class _Outputs:
    """Writes each batch to the store and to the text files on two background threads.

    Output then overlaps gene finding. ``start()`` opens the store on its thread
    (importing numpy and zarr, ~0.3 s): call it just before pyrodigal's first
    long call, which runs without the GIL, so that the imports cost no wall time.
    At most one batch is in flight.
    """

    def __init__(self, store: Path, gff: Path | None, proteins: Path | None, genes: Path | None,
                 parameters: dict, sources: Sequence[InputFile]):
        self._store_thread, self._text_thread = ThreadPoolExecutor(1), ThreadPoolExecutor(1)
        self._store_arguments = (store, parameters, sources)
        self._writer = None
        self._files = [(open(path, "w") if path else None) for path in (gff, proteins, genes)]
        self._pending: list = []
        self._first_gff = True

    def start(self) -> None:
        if self._writer is None:
            self._writer = self._store_thread.submit(_store_writer, *self._store_arguments)

    def _wait(self) -> None:
        for future in self._pending:
            future.result()
        self._pending = []

    def _write_text(self, batch: ElementBatch) -> None:
        from glmkit.io.elements import fasta_records, gff_records

        gff_out, faa_out, fna_out = self._files
        if gff_out:
            write_gff3(gff_out, zip(batch.contigs["name"], batch.contigs["length"]),
                       gff_records(batch, "glmkit-pyrodigal"), header=self._first_gff)
            self._first_gff = False
        if faa_out:
            write_fasta(faa_out, fasta_records(batch, "aa"))
        if fna_out:
            write_fasta(fna_out, fasta_records(batch, "nt"))

    def write(self, batch: ElementBatch) -> None:
        self.start()
        self._wait()
        self._pending = [self._store_thread.submit(lambda: self._writer.result().write(batch)),
                         self._text_thread.submit(self._write_text, batch)]

    def close(self, inputs: Sequence[InputFile], summary: dict) -> None:
        self.start()
        self._wait()
        if self._files[0] and self._first_gff:
            write_gff3(self._files[0], [], [])
        self._writer.result().close(inputs=inputs, summary=summary)
        self.shutdown()

    def shutdown(self) -> None:
        self._store_thread.shutdown()
        self._text_thread.shutdown()
        for fh in self._files:
            if fh:
                fh.close()


def run_call(inputs: Sequence[str], output: str, gff: str | None = None, proteins: str | None = None,
             genes: str | None = None, options: CallOptions = CallOptions(), force: bool = False) -> dict:
    """Call genes in every contig of ``inputs`` and write the element store (and the text outputs asked for)."""
    sources = [InputFile(p) for p in inputs]
    for source in sources:
        source.check()
    if sum(s.path == "-" for s in sources) > 1:
        raise GlmkitError("stdin ('-') can be read only once")
    shared_finder = _gene_finder(options)  # validates the options before any work
    stats = {"contigs": 0, "bp": 0, "cds": 0, "igs": 0}
    seen: dict[str, str] = {}
    # freezing what is alive out of the cyclic GC is ours to undo only if nothing was frozen before: gc.unfreeze()
    # would also unfreeze a caller's frozen objects
    freeze = gc.get_freeze_count() == 0
    with atomic_outputs([output, gff, proteins, genes], force, inputs) as temps, \
            ThreadPoolExecutor(max(1, options.threads)) as pool, progress(desc="call", unit="bp") as bar:
        outputs = _Outputs(*temps, asdict(options), sources)
        try:
            for source in sources:
                records = _unique(read_fasta(source, alphabet="dna"), source, seen)
                if options.mode == "single":
                    records = list(records)
                    outputs.start()
                    finder, encoded = _train(records, source, options)
                    log.info(f"call: trained on {source.display} ({sum(len(r.sequence) for r in records):,} bp)")
                else:
                    finder, encoded = shared_finder, {}
                for batch_records in _batches(iter(records)):
                    outputs.start()
                    results = []
                    for result in pool.map(lambda r: _call_contig(finder, r, options, encoded.get(r.name)),
                                           batch_records):
                        results.append(result)
                        bar.update(result[0]["length"])
                    batch = _to_batch(results)
                    # what is alive now (imported modules, this batch) stays to the end of the batch or the run:
                    # keep the cyclic GC from rescanning it (a full collection took ~25 ms on E. coli)
                    if freeze:
                        gc.freeze()
                    outputs.write(batch)
                    stats["contigs"] += batch.n_contigs
                    stats["bp"] += int(batch.contigs["length"].sum())
                    stats["cds"] += batch.n_cds
                    stats["igs"] += len(batch.elements["type"]) - batch.n_cds
            outputs.close(inputs=sources, summary={"stats": stats})
        except BaseException:
            outputs.shutdown()
            raise
        finally:
            if freeze:
                gc.unfreeze()  # leave the caller's collector as it found it
    log.info(f"call: {plural(stats['contigs'], 'contig')}, {stats['bp']:,} bp, {stats['cds']:,} CDS, "
             f"{stats['igs']:,} IGS")
    return stats
