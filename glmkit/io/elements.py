"""The element store: contigs and, per contig, its ordered CDS and IGS elements.

This is the spine of glmkit: every later store refers to genes by the
``elements/id`` strings defined here. Layout (Zarr v3, schema glmkit.elements
version 1; docs/FORMATS.md is authoritative):

    contigs/<column>     one row per contig   (CONTIG_COLUMNS)
    contigs/offsets      int64, n_contigs + 1: elements of contig i are rows offsets[i]:offsets[i+1]
    elements/<column>    one row per element  (ELEMENT_COLUMNS)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from glmkit.io.gff import GffRecord
from glmkit.io.store import (RAGGED, ColumnWriter, RaggedWriter, create_store, finish_store, open_store,
                             read_column)

SCHEMA = "glmkit.elements"
CDS, IGS = 0, 1  # elements/type codes
TYPE_NAMES = {CDS: "CDS", IGS: "IGS"}

CONTIG_COLUMNS = {
    "name": str,               # unique contig name (first word of the FASTA header, or name:start-end after filter)
    "length": np.int64,        # bp of the (sub-)contig span
    "source": str,             # contig of the input assembly this one comes from
    "source_start": np.int64,  # 1-based span on the source contig
    "source_end": np.int64,
    "model": str,              # gene model: the metagenomic bin, or "single"
    "translation_table": np.uint8,
}
ELEMENT_COLUMNS = {
    "id": str,                 # stable id: <contig>_<n> for the n-th CDS (Prodigal's), <contig>_igs<n> after CDS n
    "type": np.uint8,          # 0 CDS, 1 IGS
    "strand": np.int8,         # +1 / -1 for CDS, 0 for IGS
    "start": np.int64,         # 1-based inclusive, on the source contig, start <= end
    "end": np.int64,
    "partial_left": np.bool_,  # runs off the left (start) edge of the contig
    "partial_right": np.bool_,
    "translation_table": np.uint8,
    "start_type": str,         # ATG, GTG, TTG or Edge (CDS); empty for IGS
    "rbs_motif": str,
    "rbs_spacer": str,
    "gc_content": np.float32,
    "confidence": np.float32,
    "score": np.float32,       # Prodigal's total score and its parts
    "cscore": np.float32,
    "sscore": np.float32,
    "rscore": np.float32,
    "uscore": np.float32,
    "tscore": np.float32,
    "nt": RAGGED,              # nucleotides, in the element's orientation (IGS: forward strand)
    "aa": RAGGED,              # protein, without the stop codon's '*' (IGS: empty)
}


@dataclass
class ElementBatch:
    """A run of whole contigs with their elements, in memory, column by column."""

    contigs: dict[str, np.ndarray]
    elements: dict[str, np.ndarray]
    counts: np.ndarray  # elements per contig

    @property
    def n_contigs(self) -> int:
        return len(self.counts)

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)

    def take(self, contig_rows: Sequence[dict], element_rows: Sequence[np.ndarray]) -> "ElementBatch":
        """A new batch: contig i gets the values in ``contig_rows[i]`` and the elements at ``element_rows[i]``."""
        index = np.concatenate(element_rows).astype(np.int64) if element_rows else np.zeros(0, np.int64)
        contigs = {name: np.array([row[name] for row in contig_rows], dtype=_memory_dtype(dtype))
                   for name, dtype in CONTIG_COLUMNS.items()}
        elements = {name: values[index] for name, values in self.elements.items()}
        return ElementBatch(contigs, elements, np.array([len(r) for r in element_rows], dtype=np.int64))

    def contig_row(self, i: int) -> dict:
        return {name: values[i] for name, values in self.contigs.items()}


def _memory_dtype(dtype):
    return object if dtype in (str, RAGGED) else dtype


def empty_columns(columns: dict) -> dict[str, np.ndarray]:
    return {name: np.zeros(0, dtype=_memory_dtype(dtype)) for name, dtype in columns.items()}


def concat_batches(batches: Sequence[ElementBatch]) -> ElementBatch:
    if not batches:
        return ElementBatch(empty_columns(CONTIG_COLUMNS), empty_columns(ELEMENT_COLUMNS), np.zeros(0, np.int64))
    join = lambda attr, name: np.concatenate([getattr(b, attr)[name] for b in batches])  # noqa: E731
    return ElementBatch({n: join("contigs", n) for n in CONTIG_COLUMNS},
                        {n: join("elements", n) for n in ELEMENT_COLUMNS},
                        np.concatenate([b.counts for b in batches]))


class ElementStoreWriter:
    """Streams batches into a new element store; ``close()`` marks it complete."""

    def __init__(self, path: str | Path, parameters: dict, inputs: Sequence):
        self.group = create_store(path, SCHEMA, parameters, inputs)
        contigs, elements = self.group.create_group("contigs"), self.group.create_group("elements")
        self._writers = {}
        for prefix, group, columns in (("contigs", contigs, CONTIG_COLUMNS), ("elements", elements, ELEMENT_COLUMNS)):
            for name, dtype in columns.items():
                writer = RaggedWriter(group, name) if dtype == RAGGED else ColumnWriter(group, name, dtype)
                self._writers[f"{prefix}/{name}"] = writer
        self._offsets = ColumnWriter(contigs, "offsets", np.int64)
        self._offsets.extend([0])
        self._n_elements = 0
        self.n_contigs = 0

    def write(self, batch: ElementBatch) -> None:
        for prefix, columns in (("contigs", batch.contigs), ("elements", batch.elements)):
            for name, values in columns.items():
                self._writers[f"{prefix}/{name}"].extend(values)
        self._offsets.extend(self._n_elements + np.cumsum(batch.counts))
        self._n_elements += int(batch.counts.sum())
        self.n_contigs += batch.n_contigs

    def close(self, inputs: Sequence | None = None, summary: dict | None = None) -> None:
        for writer in self._writers.values():
            writer.close()
        self._offsets.close()
        self.group.attrs.update({"n_contigs": self.n_contigs, "n_elements": self._n_elements, **(summary or {})})
        finish_store(self.group, inputs)


class ElementStore:
    """A finished element store, read batch by batch."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        self.group = open_store(path, SCHEMA)
        self.attrs = self.group.attrs.asdict()
        self.offsets = self.group["contigs/offsets"][:]
        self.n_contigs = len(self.offsets) - 1
        self.n_elements = int(self.offsets[-1])

    def read(self, start: int = 0, stop: int | None = None) -> ElementBatch:
        """Contigs ``start:stop`` and all their elements."""
        stop = self.n_contigs if stop is None else stop
        e0, e1 = int(self.offsets[start]), int(self.offsets[stop])
        contigs = {n: read_column(self.group["contigs"], n, d, start, stop) for n, d in CONTIG_COLUMNS.items()}
        elements = {n: read_column(self.group["elements"], n, d, e0, e1) for n, d in ELEMENT_COLUMNS.items()}
        return ElementBatch(contigs, elements, np.diff(self.offsets[start:stop + 1]))

    def batches(self, max_elements: int = 200_000) -> Iterator[ElementBatch]:
        """Whole contigs, about ``max_elements`` elements per batch."""
        start = 0
        while start < self.n_contigs:
            stop = int(np.searchsorted(self.offsets, self.offsets[start] + max_elements, side="right")) - 1
            stop = min(max(stop, start + 1), self.n_contigs)
            yield self.read(start, stop)
            start = stop


# -- text exports ---------------------------------------------------------------------------------------------

def _gff_attributes(elements: dict, i: int) -> dict:
    partial = f"{int(elements['partial_left'][i])}{int(elements['partial_right'][i])}"
    if elements["type"][i] == IGS:
        return {"ID": elements["id"][i], "partial": partial}
    f = lambda name: float(elements[name][i])  # noqa: E731
    return {"ID": elements["id"][i], "partial": partial, "start_type": elements["start_type"][i],
            "rbs_motif": elements["rbs_motif"][i], "rbs_spacer": elements["rbs_spacer"][i],
            "gc_cont": f"{f('gc_content'):.3f}", "conf": f"{f('confidence'):.2f}", "score": f"{f('score'):.2f}",
            "cscore": f"{f('cscore'):.2f}", "sscore": f"{f('sscore'):.2f}", "rscore": f"{f('rscore'):.2f}",
            "uscore": f"{f('uscore'):.2f}", "tscore": f"{f('tscore'):.2f}",
            "transl_table": str(int(elements["translation_table"][i]))}


def gff_records(batch: ElementBatch, source: str, include_igs: bool = False) -> Iterable[GffRecord]:
    """CDS (and optionally IGS) rows with Prodigal's attributes, on the source contig's coordinates."""
    e = batch.elements
    offsets = batch.offsets
    for c in range(batch.n_contigs):
        seqid = batch.contigs["source"][c]
        for i in range(offsets[c], offsets[c + 1]):
            is_cds = e["type"][i] == CDS
            if not (is_cds or include_igs):
                continue
            strand = {1: "+", -1: "-"}.get(int(e["strand"][i]), ".")
            yield GffRecord(seqid, source, "CDS" if is_cds else "intergenic_region", int(e["start"][i]),
                            int(e["end"][i]), float(e["score"][i]) if is_cds else None, strand,
                            "0" if is_cds else ".", _gff_attributes(e, i))


def fasta_records(batch: ElementBatch, column: str, with_stop: bool = True) -> Iterable[tuple[str, str]]:
    """CDS as Prodigal writes them (-a proteins, -d genes): header ``id # start # end # strand # attributes``.

    Proteins get Prodigal's trailing '*' where the gene ends in a stop codon.
    """
    e = batch.elements
    for i in np.flatnonzero(e["type"] == CDS):
        strand = int(e["strand"][i])
        partial = f"{int(e['partial_left'][i])}{int(e['partial_right'][i])}"
        header = (f"{e['id'][i]} # {e['start'][i]} # {e['end'][i]} # {strand} # "
                  f"ID={e['id'][i]};partial={partial};start_type={e['start_type'][i]};"
                  f"rbs_motif={e['rbs_motif'][i]};rbs_spacer={e['rbs_spacer'][i]};gc_cont={e['gc_content'][i]:.3f}")
        sequence = e[column][i].decode()
        three_prime_complete = not (e["partial_right"][i] if strand > 0 else e["partial_left"][i])
        if column == "aa" and with_stop and three_prime_complete:
            sequence += "*"
        yield header, sequence
