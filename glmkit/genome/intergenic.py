"""One contig's element columns from its CDS: the CDS in order, with an IGS in every gap of the merged CDS
intervals (before the first gene and after the last too). Shared by the genes glmkit calls (genome/genes.py)
and the genes an annotation gives (genome/annotation.py), so both make the same element model."""

from __future__ import annotations

from typing import Sequence

IGS_SCORES = ("gc_content", "confidence", "score", "cscore", "sscore", "rscore", "uscore", "tscore")


def contig_columns(name: str, length: int, cds_rows: Sequence[dict], table: int,
                   sequence: bytes | None = None) -> dict[str, list]:
    """Element columns (lists) of one contig. ``cds_rows`` are dicts of element columns, sorted by start; an IGS
    after the n-th CDS is named ``<contig>_igs<n>``. Its ``nt`` is cut from ``sequence`` if given, else left None
    for the caller to fill."""
    from glmkit.io.elements import ANNOTATION_COLUMNS, ELEMENT_COLUMNS, IGS

    columns = [*ELEMENT_COLUMNS, *(c for c in ANNOTATION_COLUMNS if cds_rows and c in cds_rows[0])]
    cols: dict[str, list] = {n: [] for n in columns}

    def add_igs(start: int, end: int, after: int) -> None:
        row = {"id": f"{name}_igs{after}", "type": IGS, "strand": 0, "start": start, "end": end,
               "partial_left": start == 1, "partial_right": end == length, "translation_table": table,
               "start_type": "", "rbs_motif": "", "rbs_spacer": "", "aa": b"",
               "nt": None if sequence is None else sequence[start - 1:end]}
        for key in columns:
            cols[key].append(row[key] if key in row else float("nan") if key in IGS_SCORES else "")

    covered_to = 0  # right end of the merged CDS intervals so far
    for n, cds in enumerate(cds_rows, 1):
        if cds["start"] > covered_to + 1:
            add_igs(covered_to + 1, cds["start"] - 1, n - 1)
        covered_to = max(covered_to, cds["end"])
        for key in columns:
            cols[key].append(cds[key])
    if covered_to < length:
        add_igs(covered_to + 1, length, len(cds_rows))
    return cols
