"""TSV tables: one header line, tab-separated, deterministic number formatting."""

from __future__ import annotations

import math
from typing import Iterable, Iterator, Sequence, TextIO

from glmkit.errors import GlmkitError
from glmkit.io.files import InputFile


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


def read_tsv(source: InputFile, required: Sequence[str] = ()) -> Iterator[dict[str, str]]:
    """Rows as dicts keyed by the header; lines starting with '#' are comments."""
    with source.open() as stream:
        header = None
        for line_no, raw in enumerate(stream, 1):
            line = raw.decode("utf-8").rstrip("\r\n")
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
