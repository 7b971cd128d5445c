"""Genome annotations as `glmkit genes` reads them: GFF3 with its sequences (separate FASTA files or the GFF3's
own ##FASTA section), and GenBank / EMBL flat files (Biopython's parser). Gzip or not, told by content.

Every format is read into the same thing: contigs in the order of their sequences, each with its features
(CDS, RNA genes, pseudogenes) as the file states them. Turning them into elements (validation, translation,
ids) is genome/annotation.py's.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from typing import Iterator, Sequence

from glmkit.errors import GlmkitError, GlmkitUsageError
from glmkit.io.fasta import FastaRecord, check_dna, parse_fasta, read_fasta
from glmkit.io.files import InputFile
from glmkit.io.gff import GffRecord, parse_gff3_line

RNA_TYPES = {"tRNA", "rRNA", "ncRNA", "tmRNA", "misc_RNA", "RNase_P_RNA", "SRP_RNA", "antisense_RNA"}
PSEUDO_TYPES = {"pseudogene", "pseudogenic_region"}
_EXCEPT = re.compile(r"\(pos:(complement\()?(\d+)\.\.(\d+)\)?,aa:(\w+)\)")


@dataclass
class Feature:
    """One annotated feature, as its file states it."""

    type: str                            # CDS, an RNA type, or pseudogene
    parts: list[tuple[int, int]]         # 1-based inclusive spans, in the order they are transcribed
    strand: int                          # +1 / -1
    where: str                           # file and line or record, for messages
    partial_left: bool | None = None     # None: the file does not say (`partial=true` alone): see the codons
    partial_right: bool | None = None
    phase: int = 0                       # bases before the first whole codon (GFF phase, GenBank codon_start - 1)
    translation_table: int | None = None
    translation: str | None = None       # the file's own protein (GenBank /translation)
    exceptions: list[tuple[int, int, str]] = field(default_factory=list)  # transl_except: codon span, amino acid
    pseudo: bool = False
    locus_tag: str = ""
    feature_id: str = ""                 # GFF ID
    protein_id: str = ""
    gene: str = ""
    synonyms: str = ""
    product: str = ""

    @property
    def start(self) -> int:
        return min(s for s, _ in self.parts)

    @property
    def end(self) -> int:
        return max(e for _, e in self.parts)


@dataclass
class AnnotatedContig:
    name: str
    sequence: bytes
    circular: bool
    features: list[Feature]
    where: str


def annotation_format(source: InputFile) -> str:
    """gff3, genbank or embl, from the first line that is not empty."""
    with source.open() as stream:
        for raw in stream:
            line = raw.decode("utf-8", "replace").strip()
            if not line:
                continue
            if line.startswith("LOCUS"):
                return "genbank"
            if line.startswith("ID   "):
                return "embl"
            if line.startswith("##gff-version") or line.count("\t") == 8:
                return "gff3"
            break
    raise GlmkitError(f"{source.display}: neither GFF3 (##gff-version 3), GenBank (LOCUS) nor EMBL (ID) "
                      f"as its first line")


def read_annotated_contigs(annotations: Sequence[InputFile], fastas: Sequence[InputFile]) -> Iterator[AnnotatedContig]:
    """Every contig of the inputs, in file order. GFF3 files share the given FASTA files (or carry their own
    ##FASTA); a GFF3 seqid that no sequence has is an error once every sequence has been read."""
    gff_features: dict[str, list[Feature]] = {}
    gff_where: dict[str, str] = {}
    gff_circular: set[str] = set()
    embedded: list[tuple[InputFile, int]] = []
    kinds = [annotation_format(source) for source in annotations]
    if fastas and "gff3" not in kinds:
        raise GlmkitUsageError("--fasta goes with GFF3 annotations; GenBank and EMBL files hold their sequences")
    for source, kind in zip(annotations, kinds):   # the GFF3 features first: small, and the checks need them
        if kind == "gff3":
            features, circular, fasta_line = _read_gff3(source)
            for seqid, found in features.items():
                if seqid in gff_features:
                    raise GlmkitError(f"{source.display}: sequence '{seqid}' is annotated in {gff_where[seqid]} too")
                gff_features[seqid], gff_where[seqid] = found, source.display
            gff_circular |= circular
            if fasta_line:
                embedded.append((source, fasta_line))
            elif not fastas:
                raise GlmkitUsageError(f"{source.display}: a GFF3 without a ##FASTA section needs its sequences "
                                       f"(--fasta FILE)")
    seen: dict[str, str] = {}

    def unique(contig: AnnotatedContig) -> AnnotatedContig:
        if contig.name in seen:
            raise GlmkitError(f"{contig.where}: duplicate sequence name '{contig.name}' (also in {seen[contig.name]})")
        seen[contig.name] = contig.where
        return contig

    for source, kind in zip(annotations, kinds):
        if kind != "gff3":
            yield from map(unique, _read_flat_file(source, kind))
    if "gff3" not in kinds:
        return
    for record, display in _sequences(fastas, embedded):
        yield unique(AnnotatedContig(record.name, record.sequence, record.name in gff_circular,
                                     gff_features.get(record.name, []), display))
    missing = [seqid for seqid in gff_features if seqid not in seen]
    if missing:
        raise GlmkitError(f"{gff_where[missing[0]]}: sequence '{missing[0]}' is annotated but no FASTA given has it"
                          + (f" ({len(missing) - 1} more such)" if len(missing) > 1 else ""))


def _sequences(fastas: Sequence[InputFile], embedded: Sequence[tuple[InputFile, int]]):
    for source in fastas:
        for record in read_fasta(source, alphabet="dna"):
            yield record, source.display
    for source, line_no in embedded:
        with source.open() as stream:
            for _ in range(line_no):
                stream.readline()
            n = 0
            for record in parse_fasta(stream, source.display):
                n += 1
                check_dna(record, source.display)
                yield record, source.display
            if not n:
                raise GlmkitError(f"{source.display}: its ##FASTA section holds no sequences")


# -- GFF3 ---------------------------------------------------------------------------------------------------------

def _read_gff3(source: InputFile) -> tuple[dict[str, list[Feature]], set[str], int]:
    """Features by seqid, the circular seqids, and the line number of ##FASTA (0 if none)."""
    rows: list[tuple[int, GffRecord]] = []
    circular: set[str] = set()
    fasta_line = 0
    # Prodigal's GFF3 names each sequence's genetic code in comments, not per CDS:
    #   # Sequence Data: seqnum=1;seqlen=79939;seqhdr="NODE_23 ..."   # Model Data: ...;transl_table=4;...
    prodigal_table: dict[str, int] = {}
    sequence_name = None
    with source.open() as stream:
        for line_no, raw in enumerate(stream, 1):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if line.startswith("##FASTA"):
                fasta_line = line_no
                break
            if line.startswith("# Sequence Data:") and (m := re.search(r'seqhdr="([^"\s]*)', line)):
                sequence_name = m.group(1)
            elif line.startswith("# Model Data:") and sequence_name and (m := re.search(r"transl_table=(\d+)", line)):
                prodigal_table[sequence_name] = int(m.group(1))
            if not line or line.startswith("#"):
                continue
            record = parse_gff3_line(line, f"{source.display}: line {line_no}")
            if record.type == "CDS" and "transl_table" not in record.attributes and record.seqid in prodigal_table:
                record.attributes["transl_table"] = str(prodigal_table[record.seqid])
            if record.type == "region" and record.attributes.get("Is_circular") == "true":
                circular.add(record.seqid)
            rows.append((line_no, record))
    if not rows:
        raise GlmkitError(f"{source.display}: no features in this GFF3")
    parents = {r.attributes["ID"]: r for _, r in rows if "ID" in r.attributes and r.type not in ("CDS",)}
    grouped: dict[tuple[str, str], list[tuple[int, GffRecord]]] = {}
    for line_no, r in rows:
        if r.type == "CDS" or r.type in RNA_TYPES or r.type in PSEUDO_TYPES:
            key = (r.seqid, r.attributes.get("ID") or f"line {line_no}")
            grouped.setdefault(key, []).append((line_no, r))
    by_seqid: dict[str, list[Feature]] = {}
    for (seqid, _), parts in grouped.items():
        by_seqid.setdefault(seqid, []).append(_gff_feature(source, parts, parents))
    return by_seqid, circular, fasta_line


def _gff_feature(source: InputFile, rows: list[tuple[int, GffRecord]], parents: dict[str, GffRecord]) -> Feature:
    line_no, first = rows[0]
    where = f"{source.display}: line {line_no}"
    if first.strand not in ("+", "-"):
        raise GlmkitError(f"{where}: {first.type} with strand '{first.strand}' (a gene is on + or -)")
    if any(r.strand != first.strand for _, r in rows):
        raise GlmkitError(f"{where}: the parts of {first.attributes.get('ID')} lie on both strands")
    strand = 1 if first.strand == "+" else -1
    ordered = sorted((r for _, r in rows), key=lambda r: r.start, reverse=strand < 0)
    a = dict(first.attributes)
    parent = parents.get(a.get("Parent", "").split(",")[0])
    inherited = parent.attributes if parent is not None else {}
    for key in ("locus_tag", "gene", "gene_synonym", "old_locus_tag", "product", "pseudo", "gene_biotype"):
        if key not in a and key in inherited:
            a[key] = inherited[key]
    left = right = None
    if "partial" in a:
        flag = a["partial"]
        if len(flag) == 2 and set(flag) <= {"0", "1"}:      # Prodigal's partial=LR
            left, right = flag[0] == "1", flag[1] == "1"
        elif flag == "true":
            left, right = "start_range" in a or None, "end_range" in a or None
            if left or right:
                left, right = bool(left), bool(right)
        else:
            left = right = False
    else:
        left, right = "start_range" in a, "end_range" in a
    try:
        phase = int(ordered[0].phase) if ordered[0].phase in ("0", "1", "2") else 0
        table = int(a["transl_table"]) if "transl_table" in a else None
    except ValueError:
        raise GlmkitError(f"{where}: transl_table={a.get('transl_table')!r} is not a number") from None
    pseudo = (first.type in PSEUDO_TYPES or a.get("pseudo") == "true" or a.get("gene_biotype") == "pseudogene"
              or (parent is not None and parent.type in PSEUDO_TYPES))
    synonyms = [s for s in (a.get("gene_synonym", "").split(",") + a.get("old_locus_tag", "").split(",")) if s]
    return Feature(type="pseudogene" if first.type in PSEUDO_TYPES else first.type,
                   parts=[(r.start, r.end) for r in ordered], strand=strand, where=where,
                   partial_left=left, partial_right=right, phase=phase, translation_table=table,
                   translation=a.get("translation"), exceptions=_exceptions(a.get("transl_except", ""), where),
                   pseudo=pseudo, locus_tag=a.get("locus_tag", ""), feature_id=a.get("ID", ""),
                   protein_id=a.get("protein_id", ""), gene=a.get("gene", ""), synonyms=",".join(synonyms), product=a.get("product", ""))


def _exceptions(text: str, where: str) -> list[tuple[int, int, str]]:
    """transl_except=(pos:A..B,aa:Sec) or (pos:complement(A..B),aa:Sec), one or more."""
    from Bio.SeqUtils import seq1

    out = []
    for match in _EXCEPT.finditer(text):
        aa = "*" if match.group(4) == "TERM" else seq1(match.group(4), custom_map={"Sec": "U", "Pyl": "O"})
        if len(aa) != 1 or aa == "X" and match.group(4) not in ("Xaa", "OTHER"):
            raise GlmkitError(f"{where}: transl_except amino acid {match.group(4)!r} is not one glmkit knows")
        out.append((int(match.group(2)), int(match.group(3)), aa))
    return out


# -- GenBank and EMBL ---------------------------------------------------------------------------------------------

def _read_flat_file(source: InputFile, kind: str) -> Iterator[AnnotatedContig]:
    from Bio import SeqIO
    from Bio.SeqFeature import AfterPosition, BeforePosition

    with source.open() as stream:
        text = io.TextIOWrapper(stream, encoding="utf-8", errors="replace")
        records = SeqIO.parse(text, kind)
        n = 0
        while True:
            try:
                record = next(records)
            except StopIteration:
                break
            except ValueError as e:   # Biopython's parse errors
                raise GlmkitError(f"{source.display}: not a readable {kind} file after record {n} ({e})") from None
            n += 1
            where = f"{source.display}: record {record.name or record.id}"
            try:
                sequence = bytes(record.seq).upper()
            except ValueError:       # UndefinedSequenceError: a record with features and no ORIGIN / SQ
                raise GlmkitError(f"{where}: holds no sequence (a GenBank record without ORIGIN, or a CON "
                                  f"record; download it with its sequence, e.g. NCBI's 'GenBank (full)')") from None
            if not sequence:
                raise GlmkitError(f"{where}: holds no sequence")
            check_dna(FastaRecord(record.name, "", sequence), source.display)
            features = []
            for k, f in enumerate(record.features, 1):
                if f.type not in ("CDS", "gene") and f.type not in RNA_TYPES:
                    continue
                if f.type == "gene":
                    continue
                q = {key: " ".join(v) if key != "translation" else "".join(v).replace(" ", "")
                     for key, v in f.qualifiers.items()}
                fwhere = f"{where}: {f.type} feature {q.get('locus_tag') or k}"
                strands = {p.strand for p in f.location.parts}
                if strands - {1, -1} or len(strands) != 1:
                    raise GlmkitError(f"{fwhere}: its location has no single strand ({f.location})")
                parts = [(int(p.start) + 1, int(p.end)) for p in f.location.parts]
                left = isinstance(min(f.location.parts, key=lambda p: int(p.start)).start, BeforePosition)
                right = isinstance(max(f.location.parts, key=lambda p: int(p.end)).end, AfterPosition)
                try:
                    phase = int(q.get("codon_start", "1")) - 1
                    table = int(q["transl_table"]) if "transl_table" in q else None
                except ValueError:
                    raise GlmkitError(f"{fwhere}: codon_start or transl_table is not a number") from None
                synonyms = [s.strip() for s in q.get("gene_synonym", "").split(";") + q.get("old_locus_tag", "").split()
                            if s.strip()]
                features.append(Feature(
                    type=f.type, parts=parts, strand=strands.pop(), where=fwhere, partial_left=left,
                    partial_right=right, phase=phase, translation_table=table, translation=q.get("translation"),
                    exceptions=_exceptions(" ".join(f.qualifiers.get("transl_except", [])), fwhere),
                    pseudo="pseudo" in q or "pseudogene" in q, locus_tag=q.get("locus_tag", ""),
                    protein_id=q.get("protein_id", ""), gene=q.get("gene", ""), synonyms=",".join(synonyms),
                    product=q.get("product", "")))
            name = record.id if record.id and record.id != "<unknown id>" else record.name
            yield AnnotatedContig(name, sequence, record.annotations.get("topology") == "circular", features, where)
        if not n:
            raise GlmkitError(f"{source.display}: no {kind} records in it")

