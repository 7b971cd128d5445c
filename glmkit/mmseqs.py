"""MMseqs2 (Steinegger & Söding 2017) clustering through its command-line tool."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Mapping

from glmkit.errors import GlmkitError


def require_mmseqs() -> str:
    path = shutil.which("mmseqs")
    if path is None:
        raise GlmkitError("mmseqs not found on PATH: install MMseqs2 (Debian/Ubuntu: apt-get install mmseqs2; "
                          "conda: mmseqs2) or drop the clustering option")
    return path


def linclust(sequences: Mapping[str, bytes], min_seq_id: float, coverage: float, threads: int = 1) -> dict[str, str]:
    """Cluster protein sequences with ``mmseqs easy-linclust``; returns member id -> representative id.

    Ids must not contain white space. Every id maps somewhere (a singleton to itself).
    """
    binary = require_mmseqs()
    with tempfile.TemporaryDirectory(prefix="glmkit-mmseqs-") as tmp:
        fasta = Path(tmp) / "in.faa"
        with open(fasta, "wb") as fh:
            for name, seq in sequences.items():
                fh.write(b">" + name.encode() + b"\n" + seq + b"\n")
        cmd = [binary, "easy-linclust", str(fasta), str(Path(tmp) / "out"), str(Path(tmp) / "work"),
               "--min-seq-id", str(min_seq_id), "-c", str(coverage), "--threads", str(max(1, threads)), "-v", "1"]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
            raise GlmkitError(f"mmseqs easy-linclust failed (exit {result.returncode}): {tail[0]}")
        representative = {}
        for line in open(Path(tmp) / "out_cluster.tsv"):
            rep, member = line.rstrip("\n").split("\t")
            representative[member] = rep
    missing = set(sequences) - set(representative)
    if missing:
        raise GlmkitError(f"mmseqs easy-linclust left {len(missing)} sequences unassigned")
    return representative
