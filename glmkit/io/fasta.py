"""FASTA: reading (plain or gzip, any line width, CRLF, lower case) with validation, and writing."""

from __future__ import annotations

import re

from dataclasses import dataclass
from typing import BinaryIO, Iterable, Iterator, TextIO

from glmkit.errors import GlmkitError
from glmkit.io.files import InputFile

# IUPAC nucleotide codes (upper case after folding); U is accepted as T's RNA twin.
DNA_ALPHABET = b"ACGTUNRYSWKMBDHV"
# Letters that occur in proteins but are not IUPAC nucleotide codes: a contig
# full of them is a protein FASTA given where nucleotides were expected.
PROTEIN_ONLY = b"EFILPQJOZX*"
PROTEIN_ALPHABET = b"ACDEFGHIKLMNPQRSTVWYXBUZO"


@dataclass
class FastaRecord:
    name: str         # first word of the header
    description: str  # rest of the header line
    sequence: bytes   # upper case, no white space


def _first_invalid(sequence: bytes, alphabet: bytes) -> int:
    bad = sequence.translate(None, alphabet)
    return -1 if not bad else sequence.index(bad[:1])


def check_dna(record: FastaRecord, where: str) -> None:
    pos = _first_invalid(record.sequence, DNA_ALPHABET)
    if pos < 0:
        return
    protein_letters = len(record.sequence) - len(record.sequence.translate(None, PROTEIN_ONLY))
    if protein_letters > 0.1 * len(record.sequence):
        raise GlmkitError(f"{where}: record '{record.name}' looks like a protein sequence "
                          f"(amino-acid letters such as '{chr(record.sequence[pos])}'); expected nucleotides")
    raise GlmkitError(f"{where}: record '{record.name}': invalid nucleotide character "
                      f"'{chr(record.sequence[pos])}' at position {pos + 1} (IUPAC codes only)")


def _check_amino_acids(record: FastaRecord, where: str) -> None:
    pos = _first_invalid(record.sequence, PROTEIN_ALPHABET)
    if pos >= 0:
        raise GlmkitError(f"{where}: record '{record.name}': invalid amino-acid character "
                          f"'{chr(record.sequence[pos])}' at position {pos + 1}")


NUCLEOTIDE_LETTERS = b"ACGTUN"
MIN_NUCLEOTIDE_LIKE = 20  # shorter peptides of these letters alone are not implausible


def _check_protein(record: FastaRecord, where: str) -> None:
    _check_amino_acids(record, where)
    if len(record.sequence) >= MIN_NUCLEOTIDE_LIKE and not record.sequence.translate(None, NUCLEOTIDE_LETTERS):
        raise GlmkitError(f"{where}: record '{record.name}' looks like a nucleotide sequence (only A, C, G, T, U, N); "
                          f"expected proteins (--no-nucleotide-check if these really are proteins)")


WHITESPACE = b" \t\r\n\v\f"
BLOCK = 1 << 22  # bytes read at a time


def _whole_lines(stream: BinaryIO) -> Iterator[bytes]:
    """The stream in blocks of whole lines (the last one may lack its newline).

    A line longer than a block (an unwrapped chromosome) is gathered in pieces
    and joined once, so reading stays linear in its length.
    """
    pending: list[bytes] = []
    while block := stream.read(BLOCK):
        cut = block.rfind(b"\n") + 1
        if not cut:
            pending.append(block)
            continue
        yield b"".join([*pending, block[:cut]])
        pending = [block[cut:]]
    if rest := b"".join(pending):
        yield rest


def parse_fasta(stream: BinaryIO, where: str) -> Iterator[FastaRecord]:
    """Records from an open binary stream; ``where`` names the file in errors.

    Works on blocks of lines rather than line by line (a Python loop costs ~1 us
    per line, most of the parse): the lines between one header and the next
    "\n>" are one stretch, stripped of white space in one call.
    """
    name = description = None
    chunks: list[bytes] = []
    line_no = 1  # of the line at ``pos``
    for text in _whole_lines(stream):
        pos = 0
        while pos < len(text):
            if text.startswith(b">", pos):
                end = text.find(b"\n", pos)
                end = len(text) if end < 0 else end
                if name is not None:
                    yield FastaRecord(name, description, b"".join(chunks).upper())
                header = text[pos + 1:end].decode("utf-8", "replace").strip()
                if not header:
                    raise GlmkitError(f"{where}: line {line_no}: empty FASTA header")
                if "\r" in header:   # lines end in CR alone: the whole file reads as one header line
                    raise GlmkitError(f"{where}: lines end in a carriage return alone (classic Mac line ends); "
                                      f"convert them first, e.g. tr '\\r' '\\n' < FILE > FILE.fixed")
                # the name ends at the first white space of any kind, as Prodigal and NCBI read it (a tab too)
                name, description = _split_header(header)
                chunks = []
                pos, line_no = end + 1, line_no + 1
                continue
            end = text.find(b"\n>", pos)
            end = len(text) if end < 0 else end + 1
            stretch = text[pos:end]
            sequence = stretch.translate(None, WHITESPACE)
            if sequence and name is None:
                first = len(stretch) - len(stretch.lstrip(WHITESPACE))
                bad_line = line_no + stretch.count(b"\n", 0, first)
                raise GlmkitError(f"{where}: line {bad_line}: sequence data "
                                  "before the first '>' header (not FASTA?)")
            if sequence:
                chunks.append(sequence)
            pos, line_no = end, line_no + stretch.count(b"\n")
    if name is not None:
        yield FastaRecord(name, description, b"".join(chunks).upper())


_ASCII_SPACE = re.compile(r"[ \t\v\f]+")


def _split_header(header: str) -> tuple[str, str]:
    """(name, description): the name is the header up to its first ASCII white space (space, tab, ...), as
    Prodigal and NCBI's tools take it; other characters (U+2028, ...) belong to the name."""
    parts = _ASCII_SPACE.split(header, maxsplit=1)
    return parts[0], parts[1].strip() if len(parts) > 1 else ""


def read_fasta(source: InputFile, alphabet: str | None = None, allow_empty: bool = False) -> Iterator[FastaRecord]:
    """Validated records of one input file.

    ``alphabet`` is "dna", "protein" (which also refuses records of 20 or more nucleotide letters alone),
    "any-protein" (amino-acid letters, nothing more) or None (no check). Sequences are upper
    case; proteins lose one final '*' (a stop codon, as Prodigal writes them).
    The file must hold at least one record, and no record may be empty unless
    ``allow_empty``.
    """
    check = {"dna": check_dna, "protein": _check_protein, "any-protein": _check_amino_acids, None: None}[alphabet]
    n = 0
    with source.open() as stream:
        for record in parse_fasta(stream, source.display):
            if alphabet in ("protein", "any-protein") and record.sequence.endswith(b"*"):
                record.sequence = record.sequence[:-1]  # Prodigal writes the stop codon as a final '*'
            if not record.sequence and not allow_empty:
                raise GlmkitError(f"{source.display}: record '{record.name}' has no sequence")
            if check:
                check(record, source.display)
            n += 1
            yield record
    if n == 0:
        raise GlmkitError(f"{source.display}: no FASTA records (empty file?)")


def write_fasta(handle: TextIO, records: Iterable[tuple[str, str]], width: int = 60) -> None:
    """Write (header, sequence) pairs, wrapping sequences at ``width``."""
    for header, sequence in records:
        handle.write(f">{header}\n")
        for i in range(0, len(sequence), width):
            handle.write(sequence[i:i + width])
            handle.write("\n")
