"""TSV tables: one header line, tab-separated, deterministic number formatting."""

from __future__ import annotations

import logging
import math
from typing import Iterable, Iterator, Sequence, TextIO

from glmkit.errors import GlmkitError
from glmkit.io.files import InputFile

log = logging.getLogger("glmkit")


def format_value(value) -> str:
    """Same value, same text: floats in shortest round-trip form, NaN as 'nan', None as empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(value)
    if hasattr(value, "item"):  # numpy scalar
        return format_value(value.item())
    text = str(value)
    if "\t" in text or "\n" in text:
        raise ValueError(f"TSV value contains a tab or newline: {text!r}")
    return text


def write_tsv(handle: TextIO, columns: Sequence[str], rows: Iterable[Sequence], header: bool = True) -> int:
    """Write a header (unless appending rows) and rows; returns the number of rows."""
    if header:
        handle.write("\t".join(columns) + "\n")
    n = 0
    for row in rows:
        if len(row) != len(columns):
            raise ValueError(f"row has {len(row)} values for {len(columns)} columns")
        handle.write("\t".join(format_value(v) for v in row) + "\n")
        n += 1
    return n


def text_lines(source: InputFile) -> Iterator[tuple[int, str]]:
    """(line number, text) of a user's text table, read tolerantly: a UTF-8 byte-order mark dropped, CRLF or LF
    line ends, and a line that is not UTF-8 read as Latin-1 (every byte is a Latin-1 character) with one note
    naming the file, as spreadsheets and older tools write them."""
    noted = False
    with source.open() as stream:
        for line_no, raw in enumerate(stream, 1):
            if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                line = raw.decode("latin-1")
                if not noted:
                    log.info(f"{source.display}: line {line_no} is not UTF-8: read as Latin-1")
                    noted = True
            yield line_no, line.rstrip("\r\n")


def read_tsv(source: InputFile, required: Sequence[str] = ()) -> Iterator[dict[str, str]]:
    """Rows as dicts keyed by the header; lines starting with '#' are comments (read as text_lines reads)."""
    header = None
    for line_no, line in text_lines(source):
        if not line or line.startswith("#"):
            continue
        fields = line.split("\t")
        if header is None:
            header = fields
            missing = [c for c in required if c not in header]
            if missing:
                raise GlmkitError(f"{source.display}: missing column(s) {', '.join(missing)}")
            continue
        if len(fields) != len(header):
            raise GlmkitError(f"{source.display}: line {line_no}: {len(fields)} fields, header has {len(header)}")
        yield dict(zip(header, fields))
