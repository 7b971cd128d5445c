"""Writing safetensors files (the one writer for weights, normalisations and classifiers): safetensors' own
writer, with its header made deterministic and its failures raised as OSError (kept import-light: no torch)."""

from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path


def save_safetensors(tensors: dict, path: Path, metadata: dict[str, str] | None = None) -> None:
    """safetensors' own writer, with two things made right: the header's keys in sorted order (safetensors
    writes its metadata in a random order, so the same tensors gave other bytes each run, breaking the checksum
    caching of Snakemake and Nextflow), and a failed write (a full disk) raised as the OSError it is."""
    from safetensors import SafetensorError

    if tensors and type(next(iter(tensors.values()))).__module__ == "numpy":
        from safetensors.numpy import save_file
    else:
        from safetensors.torch import save_file
    try:
        save_file(tensors, str(path), metadata=metadata)
    except SafetensorError as e:
        code = re.search(r"os error (\d+)|code: (\d+)", str(e))   # "I/O error: ... (os error 28)"
        number = int(code.group(1) or code.group(2)) if code else errno.EIO
        raise OSError(number, os.strerror(number), str(path)) from None
    if metadata and len(metadata) > 1:
        with open(path, "r+b") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n))
            canonical = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
            if len(canonical) <= n:   # the same entries: never longer; padded with spaces as safetensors pads
                fh.seek(8)
                fh.write(canonical.ljust(n, b" "))
