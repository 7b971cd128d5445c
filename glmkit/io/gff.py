"""GFF3 reading and writing (https://github.com/The-Sequence-Ontology/Specifications/blob/master/gff3.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Iterator, TextIO
from urllib.parse import quote, unquote

from glmkit.errors import GlmkitError
from glmkit.io.files import InputFile

# Characters GFF3 allows unescaped in the seqid column and in attribute values.
_SEQID_SAFE = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.:^*$@!+_?-|"
_ATTR_SAFE = _SEQID_SAFE + " #/()[]{}<>'\"~`"
_ATTR_LINE = re.compile(f"[{re.escape(_ATTR_SAFE + ';=')}]*")  # a whole attribute column needing no escapes


@dataclass
class GffRecord:
    seqid: str
    source: str
    type: str
    start: int   # 1-based, inclusive
    end: int     # inclusive
    score: float | None
    strand: str  # '+', '-', '.' or '?'
    phase: str   # '0', '1', '2' or '.'
    attributes: dict[str, str] = field(default_factory=dict)


def _escape(value: str, safe: str, _cache: dict = {}) -> str:
    """Percent-encode what GFF3 reserves; most values need nothing, so check that first (it is the hot path)."""
    pattern = _cache.get(safe) or _cache.setdefault(safe, re.compile(f"[{re.escape(safe)}]*"))
    return value if pattern.fullmatch(value) else quote(value, safe=safe)


def _format_score(score: float | None) -> str:
    return "." if score is None else f"{score:.1f}"


def write_gff3(handle: TextIO, regions: Iterable[tuple[str, int]], records: Iterable[GffRecord],
               header: bool = True) -> None:
    """The version line (if ``header``), a ##sequence-region per (seqid, length), then the records in order.

    Call it once per batch with ``header=False`` after the first to stream a large file.
    """
    if header:
        handle.write("##gff-version 3\n")
    for seqid, length in regions:
        handle.write(f"##sequence-region {_escape(seqid, _SEQID_SAFE)} 1 {length}\n")
    for r in records:
        attrs = ";".join(f"{k}={v}" for k, v in r.attributes.items())
        # one check per line, not per value: escape only when some value needs it (they rarely do)
        if not (_ATTR_LINE.fullmatch(attrs) and attrs.count("=") == len(r.attributes)
                and attrs.count(";") == len(r.attributes) - 1):
            attrs = ";".join(f"{k}={_escape(str(v), _ATTR_SAFE)}" for k, v in r.attributes.items())
        handle.write("\t".join((_escape(r.seqid, _SEQID_SAFE), r.source, r.type, str(r.start), str(r.end),
                                _format_score(r.score), r.strand, r.phase, attrs)) + "\n")


def parse_gff3_line(line: str, where: str) -> GffRecord:
    """One feature row (no comment or directive); ``where`` names the file and line in errors."""
    cols = line.split("\t")
    if len(cols) != 9:
        raise GlmkitError(f"{where}: {len(cols)} columns, GFF3 has 9")
    attributes = {}
    for item in cols[8].strip().strip(";").split(";"):
        if item:
            key, _, value = item.partition("=")
            attributes[unquote(key.strip())] = unquote(value)
    try:
        start, end = int(cols[3]), int(cols[4])
    except ValueError:
        raise GlmkitError(f"{where}: start/end are not integers") from None
    try:
        score = None if cols[5] == "." else float(cols[5])
    except ValueError:
        raise GlmkitError(f"{where}: score {cols[5]!r} is not a number") from None
    return GffRecord(unquote(cols[0]), cols[1], cols[2], start, end, score, cols[6], cols[7], attributes)


def read_gff3(source: InputFile, types: set[str] | None = None) -> Iterator[GffRecord]:
    """Feature rows (optionally only some types); stops at a ##FASTA section."""
    with source.open() as stream:
        for line_no, raw in enumerate(stream, 1):
            line = raw.decode("utf-8").rstrip("\r\n")
            if line.startswith("##FASTA"):
                break
            if not line or line.startswith("#"):
                continue
            record = parse_gff3_line(line, f"{source.display}: line {line_no}")
            if types is None or record.type in types:
                yield record
