"""An annotation's genes as elements (`glmkit genes`), torch-free: the element model of `glmkit call` built from
the CDS a file states rather than from Prodigal's.

- CDS: each protein-coding feature, its nucleotides cut from the contig (compound locations joined in
  transcription order), its protein the file's own `/translation` where it has one, else translated from the
  coordinates with its translation table (alternative start codons read as M, `transl_except` applied, the
  stop's '*' dropped). Where both exist and differ, the file's wins and the difference is counted.
- Pseudogenes and RNA genes (tRNA, rRNA, ncRNA, ...) are not CDS: their bases lie in the IGS around them, as
  they do in the OMG corpus (IGS = everything between CDS). They are counted.
- A CDS spanning the origin of a circular contig cannot be one interval of a linear contig: it is left out,
  counted and named in a warning, its bases in the IGS.
- Ids: the locus tag, else the GFF ID, else the protein id, else `<contig>_<n>`; alternative isoforms of one
  locus tag (RefSeq E. coli's mrcB, clpB, yibX) each get `<locus_tag>_<protein id>`.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Sequence

from glmkit.errors import GlmkitError
from glmkit.io.annotations import RNA_TYPES, AnnotatedContig, Feature

log = logging.getLogger("glmkit")
_COMPLEMENT = bytes.maketrans(b"ACGTRYKMBVDHNacgtrykmbvdhn", b"TGCAYRMKVBHDNtgcayrmkvbhdn")
STARTS = ("ATG", "GTG", "TTG")


def reverse_complement(nt: bytes) -> bytes:
    return nt.translate(_COMPLEMENT)[::-1]


def codon_table(number: int, where: str):
    from Bio.Data import CodonTable

    if number not in CodonTable.unambiguous_dna_by_id:
        raise GlmkitError(f"{where}: translation table {number} is not an NCBI genetic code "
                          f"({', '.join(map(str, sorted(CodonTable.unambiguous_dna_by_id)))})")
    return CodonTable.unambiguous_dna_by_id[number]


def _spans_origin(feature: Feature, contig: AnnotatedContig) -> bool:
    """Parts that go round the end of a circular contig: out of transcription order (GenBank join(x..L,1..y)),
    or touching both ends (GFF3 rows of one ID), or a GFF3 end past the contig's length."""
    starts = [s for s, _ in feature.parts]
    out_of_order = any((b < a) if feature.strand > 0 else (b > a) for a, b in zip(starts, starts[1:]))
    touches_both = len(feature.parts) > 1 and feature.start == 1 and feature.end == len(contig.sequence)
    return contig.circular and (out_of_order or touches_both or feature.end > len(contig.sequence))


def _nucleotides(feature: Feature, sequence: bytes) -> bytes:
    pieces = [sequence[s - 1:e] for s, e in feature.parts]
    return b"".join(pieces) if feature.strand > 0 else b"".join(reverse_complement(p) for p in pieces)


def _cds_offset(feature: Feature, position: int) -> int | None:
    """Where a contig position lies in the CDS's nucleotides (0-based), or None if outside."""
    done = 0
    for s, e in feature.parts:
        if s <= position <= e:
            return done + (position - s if feature.strand > 0 else e - position)
        done += e - s + 1
    return None


class Translator:
    """Proteins of annotated CDS, with the counts of what needed saying."""

    def __init__(self, default_table: int, counts: Counter):
        self.default_table, self.counts = default_table, counts
        self._tables: dict[int, object] = {}

    def table(self, feature: Feature):
        number = feature.translation_table or self.default_table
        if number not in self._tables:
            self._tables[number] = codon_table(number, feature.where)
        return number, self._tables[number]

    def protein(self, feature: Feature, nt: bytes, five_partial: bool, three_partial: bool) -> str:
        from Bio.Seq import Seq

        number, table = self.table(feature)
        coding = nt[feature.phase:]
        coding = coding[:len(coding) - len(coding) % 3]
        aa = list(str(Seq(coding.decode()).translate(table=number)))
        if aa and not five_partial and feature.phase == 0 and coding[:3].decode() in table.start_codons:
            aa[0] = "M"
        for first, last, letter in feature.exceptions:
            offset = _cds_offset(feature, first if feature.strand > 0 else last)  # the codon's first base
            if offset is not None and (offset - feature.phase) % 3 == 0 and 0 <= (offset - feature.phase) // 3 < len(aa):
                aa[(offset - feature.phase) // 3] = letter
        if aa and aa[-1] == "*" and not three_partial:
            aa.pop()
        protein = "".join(aa)
        if "*" in protein:
            self.counts["internal_stops"] += 1
            if self.counts["internal_stops"] == 1:
                log.warning(f"genes: {feature.where}: a stop codon inside the CDS (read as X; further ones counted)")
            protein = protein.replace("*", "X")
        given = (feature.translation or "").upper().rstrip("*")
        if given:
            if given != protein:
                self.counts["translation_differs"] += 1
                if self.counts["translation_differs"] == 1:
                    log.warning(f"genes: {feature.where}: the file's /translation differs from the coordinates' "
                                f"translation; the file's is kept (further ones counted)")
            return given
        return protein


def _partials(feature: Feature, nt: bytes, table) -> tuple[bool, bool]:
    """(left, right) partial flags in contig orientation. Where the file says `partial=true` alone, the codons
    tell: no start codon at the 5' end, or no stop at the 3' end."""
    left, right = feature.partial_left, feature.partial_right
    if left is None or right is None:
        five = feature.phase != 0 or nt[:3].decode() not in table.start_codons
        three = len(nt) % 3 != (feature.phase % 3) or nt[-3:].decode() not in table.stop_codons
        five_side, three_side = (five, three) if feature.strand > 0 else (three, five)
        left = five_side if left is None else left
        right = three_side if right is None else right
    return bool(left), bool(right)


def contig_elements(contig: AnnotatedContig, translator: Translator, counts: Counter,
                    ids: dict[str, str]) -> tuple[dict, dict]:
    """(contig row, element columns) of one annotated contig. ``ids`` (id -> where) spans the whole run."""
    from glmkit.genome.intergenic import contig_columns
    from glmkit.io.elements import CDS

    length = len(contig.sequence)
    rows: list[dict] = []
    where_of: dict[tuple, str] = {}
    for feature in contig.features:
        if feature.type != "CDS" or feature.pseudo:
            kind = "pseudogenes" if feature.pseudo or feature.type == "pseudogene" else \
                "rna_genes" if feature.type in RNA_TYPES else f"other_{feature.type}"
            counts[kind] += 1
            continue
        if _spans_origin(feature, contig):
            counts["origin_spanning_cds_left_out"] += 1
            if counts["origin_spanning_cds_left_out"] == 1:
                log.warning(f"genes: {feature.where}: CDS spans the origin of circular '{contig.name}'; an element "
                            f"store's contigs are linear, so it is left out and its bases are IGS (counted)")
            continue
        bad = next(((s, e) for s, e in feature.parts if not 1 <= s <= e <= length), None)
        if bad:
            raise GlmkitError(f"{feature.where}: CDS at {bad[0]}..{bad[1]} lies outside '{contig.name}' "
                              f"({length:,} bp)")
        key = (feature.strand, tuple(feature.parts))
        if key in where_of:
            raise GlmkitError(f"{feature.where}: the same CDS ({feature.start}..{feature.end}, strand "
                              f"{'+' if feature.strand > 0 else '-'}) as {where_of[key]}")
        where_of[key] = feature.where
        number, table = translator.table(feature)
        nt = _nucleotides(feature, contig.sequence)
        left, right = _partials(feature, nt, table)
        five, three = (left, right) if feature.strand > 0 else (right, left)
        if (len(nt) - feature.phase) % 3 and not (five or three):
            raise GlmkitError(f"{feature.where}: CDS of {len(nt) - feature.phase:,} bp, not a multiple of three, "
                              f"and not marked partial")
        aa = translator.protein(feature, nt, five, three)
        counts["partial_cds"] += left or right
        codon = nt[:3].decode()
        gc = (nt.count(b"G") + nt.count(b"C")) / len(nt) if nt else float("nan")
        rows.append({"id": feature.locus_tag or feature.feature_id or feature.protein_id, "type": CDS,
                     "strand": feature.strand, "start": feature.start, "end": feature.end,
                     "partial_left": left, "partial_right": right, "translation_table": number,
                     "start_type": "Edge" if five else codon, "rbs_motif": "", "rbs_spacer": "",
                     "gc_content": gc, "confidence": float("nan"), "score": float("nan"),
                     "cscore": float("nan"), "sscore": float("nan"), "rscore": float("nan"),
                     "uscore": float("nan"), "tscore": float("nan"), "nt": nt, "aa": aa.encode(),
                     "locus_tag": feature.locus_tag, "gene": feature.gene, "synonyms": feature.synonyms,
                     "product": feature.product, "_feature": feature})
    rows.sort(key=lambda r: (r["start"], r["end"], r["strand"]))
    _name_genes(contig.name, rows, counts, ids)
    tables = Counter(r["translation_table"] for r in rows)
    table = tables.most_common(1)[0][0] if tables else translator.default_table
    cols = contig_columns(contig.name, length, rows, table, contig.sequence)
    contig_row = {"name": contig.name, "length": length, "source": contig.name, "source_start": 1,
                  "source_end": length, "model": "annotation", "translation_table": table}
    counts["contigs"] += 1
    counts["cds"] += len(rows)
    return contig_row, cols


def _name_genes(contig: str, rows: Sequence[dict], counts: Counter, ids: dict[str, str]) -> None:
    """Stable, unique ids: isoforms of one locus tag are told apart by their protein ids."""
    primary = Counter(r["id"] for r in rows if r["id"])
    for n, row in enumerate(rows, 1):
        feature = row.pop("_feature")
        if not row["id"]:
            row["id"] = f"{contig}_{n}"
        elif primary[row["id"]] > 1:
            counts["isoforms"] += 1
            row["id"] = f"{row['id']}_{feature.protein_id or feature.feature_id or n}"
        if row["id"] in ids:
            raise GlmkitError(f"{feature.where}: gene id '{row['id']}' is also the id of {ids[row['id']]} "
                              f"(ids come from locus_tag, ID or protein_id and must be unique)")
        ids[row["id"]] = feature.where
