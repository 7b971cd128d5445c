"""The element store: contigs and, per contig, its ordered CDS and IGS elements.

This is the spine of glmkit: every later store refers to genes by the
``elements/id`` strings defined here. Layout (Zarr v3, schema glmkit.elements
version 3; docs/FORMATS.md is authoritative):

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
from glmkit.io.store import (RAGGED, ColumnWriter, RaggedWriter, close_writers, create_store, finish_store,
                             open_store, read_column)

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
# What an annotation names a gene by (`glmkit genes`); empty for genes glmkit called itself. Written from schema
# version 3 on; an older store reads them as empty. A batch that lacks them is written with them empty.
ANNOTATION_COLUMNS = {
    "locus_tag": str,
    "gene": str,               # gene name (thrL)
    "synonyms": str,           # other names, comma-separated: gene_synonym, old_locus_tag
    "product": str,
}
ANNOTATIONS_SINCE = 3


REQUIRED_ARRAYS = ("contigs/offsets",
                   *(f"{prefix}/{name}" + ("/offsets" if dtype == RAGGED else "")
                     for prefix, columns in (("contigs", CONTIG_COLUMNS), ("elements", ELEMENT_COLUMNS))
                     for name, dtype in columns.items()),
                   *(f"elements/{name}/data" for name, dtype in ELEMENT_COLUMNS.items() if dtype == RAGGED))


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
    def n_cds(self) -> int:
        return int((self.elements["type"] == CDS).sum())

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)

    def take(self, contig_rows: Sequence[dict], element_rows: Sequence[np.ndarray]) -> "ElementBatch":
        """A new batch: contig i gets the values in ``contig_rows[i]`` and the elements at ``element_rows[i]``."""
        index = np.concatenate(element_rows).astype(np.int64) if element_rows else np.zeros(0, np.int64)
        contigs = {name: np.array([row[name] for row in contig_rows], dtype=memory_dtype(dtype))
                   for name, dtype in CONTIG_COLUMNS.items()}
        elements = {name: values[index] for name, values in self.elements.items()}
        return ElementBatch(contigs, elements, np.array([len(r) for r in element_rows], dtype=np.int64))

    def contig_row(self, i: int) -> dict:
        return {name: values[i] for name, values in self.contigs.items()}


def memory_dtype(dtype):
    """How a column is held in memory: strings and byte sequences as object arrays, the rest as is."""
    return object if dtype in (str, RAGGED) else dtype


def column_array(values: list, dtype) -> np.ndarray:
    """A column from Python values (object arrays built element-wise, so bytes stay bytes)."""
    if memory_dtype(dtype) is object:
        out = np.empty(len(values), dtype=object)
        out[:] = values
        return out
    return np.array(values, dtype=dtype)


class ElementStoreWriter:
    """Streams batches into a new element store; ``close()`` marks it complete."""

    def __init__(self, path: str | Path, parameters: dict, inputs: Sequence):
        self.group = create_store(path, SCHEMA, parameters, inputs)
        contigs, elements = self.group.create_group("contigs"), self.group.create_group("elements")
        self._writers = {}
        for prefix, group, columns in (("contigs", contigs, CONTIG_COLUMNS),
                                       ("elements", elements, {**ELEMENT_COLUMNS, **ANNOTATION_COLUMNS})):
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
        for name in ANNOTATION_COLUMNS.keys() - batch.elements.keys():
            self._writers[f"elements/{name}"].extend(np.full(len(batch.elements["id"]), "", dtype=object))
        self._offsets.extend(self._n_elements + np.cumsum(batch.counts))
        self._n_elements += int(batch.counts.sum())
        self.n_contigs += batch.n_contigs

    def close(self, inputs: Sequence | None = None, summary: dict | None = None) -> None:
        close_writers([*self._writers.values(), self._offsets])
        finish_store(self.group, inputs, {"n_contigs": self.n_contigs, "n_elements": self._n_elements, **(summary or {})})


class ElementStore:
    """A finished element store, read batch by batch."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        self.group = open_store(path, SCHEMA, required=REQUIRED_ARRAYS)
        self.attrs = self.group.attrs.asdict()
        self.offsets = self.group["contigs/offsets"][:]
        self.n_contigs = len(self.offsets) - 1
        self.n_elements = int(self.offsets[-1])
        self.has_annotations = self.attrs["schema_version"] >= ANNOTATIONS_SINCE

    def read(self, start: int = 0, stop: int | None = None, columns: Iterable[str] | None = None) -> ElementBatch:
        """Contigs ``start:stop`` and all their elements; of the elements, only ``columns`` if given (the
        sequences, ``nt`` above all, are most of a batch's memory: a reader that needs none should not pay)."""
        stop = self.n_contigs if stop is None else stop
        e0, e1 = int(self.offsets[start]), int(self.offsets[stop])
        every = {**ELEMENT_COLUMNS, **ANNOTATION_COLUMNS}
        wanted = every if columns is None else {n: every[n] for n in columns}
        contigs = {n: read_column(self.group["contigs"], n, d, start, stop) for n, d in CONTIG_COLUMNS.items()}
        elements = {n: read_column(self.group["elements"], n, d, e0, e1) if self.has_annotations or
                    n not in ANNOTATION_COLUMNS else np.full(e1 - e0, "", dtype=object) for n, d in wanted.items()}
        return ElementBatch(contigs, elements, np.diff(self.offsets[start:stop + 1]))

    def batches(self, max_elements: int = 200_000, columns: Iterable[str] | None = None) -> Iterator[ElementBatch]:
        """Whole contigs, about ``max_elements`` elements per batch (``columns``: as ``read``)."""
        start = 0
        while start < self.n_contigs:
            stop = int(np.searchsorted(self.offsets, self.offsets[start] + max_elements, side="right")) - 1
            stop = min(max(stop, start + 1), self.n_contigs)
            yield self.read(start, stop, columns)
            start = stop


# -- text exports ---------------------------------------------------------------------------------------------

def _as_lists(batch: ElementBatch, rows: np.ndarray) -> dict[str, list]:
    """Plain Python values of the given rows: formatting numpy scalars one by one is several times slower."""
    return {name: values[rows].tolist() for name, values in batch.elements.items() if name not in ("nt", "aa")}


def _partial(e: dict, i: int) -> str:
    return f"{int(e['partial_left'][i])}{int(e['partial_right'][i])}"


def gff_records(batch: ElementBatch, source: str, include_igs: bool = False) -> Iterable[GffRecord]:
    """CDS (and optionally IGS) rows with Prodigal's attributes, on the source contig's coordinates."""
    types = batch.elements["type"]
    rows = np.arange(len(types)) if include_igs else np.flatnonzero(types == CDS)
    e = _as_lists(batch, rows)
    seqids = np.repeat(batch.contigs["source"], batch.counts)[rows].tolist()
    for i, seqid in enumerate(seqids):
        if e["type"][i] == IGS:
            yield GffRecord(seqid, source, "intergenic_region", e["start"][i], e["end"][i], None, ".", ".",
                            {"ID": e["id"][i], "partial": _partial(e, i)})
            continue
        attributes = {"ID": e["id"][i], "partial": _partial(e, i), "start_type": e["start_type"][i],
                      "rbs_motif": e["rbs_motif"][i], "rbs_spacer": e["rbs_spacer"][i],
                      "gc_cont": f"{e['gc_content'][i]:.3f}", "conf": f"{e['confidence'][i]:.2f}"}
        for score in ("score", "cscore", "sscore", "rscore", "uscore", "tscore"):
            attributes[score] = f"{e[score][i]:.2f}"
        attributes["transl_table"] = str(e["translation_table"][i])
        yield GffRecord(seqid, source, "CDS", e["start"][i], e["end"][i], e["score"][i],
                        "+" if e["strand"][i] > 0 else "-", "0", attributes)


def fasta_records(batch: ElementBatch, column: str, with_stop: bool = True) -> Iterable[tuple[str, str]]:
    """CDS as Prodigal writes them (-a proteins, -d genes): header ``id # start # end # strand # attributes``.

    Proteins get Prodigal's trailing '*' where the gene ends in a stop codon.
    """
    rows = np.flatnonzero(batch.elements["type"] == CDS)
    e = _as_lists(batch, rows)
    sequences = batch.elements[column][rows]
    for i, sequence in enumerate(sequences):
        strand = e["strand"][i]
        header = (f"{e['id'][i]} # {e['start'][i]} # {e['end'][i]} # {strand} # "
                  f"ID={e['id'][i]};partial={_partial(e, i)};start_type={e['start_type'][i]};"
                  f"rbs_motif={e['rbs_motif'][i]};rbs_spacer={e['rbs_spacer'][i]};gc_cont={e['gc_content'][i]:.3f}")
        text = sequence.decode()
        three_prime_complete = not (e["partial_right"][i] if strand > 0 else e["partial_left"][i])
        if column == "aa" and with_stop and three_prime_complete:
            text += "*"
        yield header, text
