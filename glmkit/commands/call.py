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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

from glmkit.errors import GlmkitError
from glmkit.io.fasta import FastaRecord, read_fasta, write_fasta
from glmkit.io.files import InputFile, atomic_outputs
from glmkit.io.gff import write_gff3
from glmkit.log import plural, progress
from glmkit.genome import genes as gene_calling
from glmkit.options import CallOptions

if TYPE_CHECKING:
    from glmkit.io.elements import ElementBatch

log = logging.getLogger("glmkit")

BATCH_BP = 20_000_000     # contigs are gene-called in batches of about this many bp ...
BATCH_CONTIGS = 20_000    # ... or this many contigs, whichever comes first


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
    shared_finder = gene_calling.gene_finder(options)  # validates the options before any work
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
                    finder, encoded = gene_calling.train(records, source, options)
                    log.info(f"call: trained on {source.display} ({sum(len(r.sequence) for r in records):,} bp)")
                else:
                    finder, encoded = shared_finder, {}
                for batch_records in _batches(iter(records)):
                    outputs.start()
                    results = []
                    for result in pool.map(lambda r: gene_calling.call_contig(finder, r, options, encoded.get(r.name)),
                                           batch_records):
                        results.append(result)
                        bar.update(result[0]["length"])
                    batch = gene_calling.to_batch(results)
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
