"""MMseqs2 (Steinegger & Söding 2017) clustering through its command-line tool: the one wrapper glmkit has.

MMseqs2's linclust may give slightly different clusters with different thread
counts (its work is split across threads); one thread gives the same clusters
on every run.
"""

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


def easy_linclust(fasta: Path, prefix: Path, tmpdir: Path, min_seq_id: float, coverage: float, cov_mode: int = 0,
                  threads: int = 1) -> tuple[Path, Path]:
    """Run ``mmseqs easy-linclust``; returns (cluster TSV of representative, member; representatives FASTA).

    Its output goes to ``prefix``.log; a failure is one line naming that log (kept for the user to read).
    """
    binary = require_mmseqs()
    log_path = prefix.with_name(prefix.name + ".log")
    cmd = [binary, "easy-linclust", str(fasta), str(prefix), str(tmpdir), "--min-seq-id", str(min_seq_id),
           "-c", str(coverage), "--cov-mode", str(cov_mode), "--threads", str(max(1, threads)), "-v", "2"]
    with open(log_path, "w") as log:
        log.write(" ".join(cmd) + "\n")
        log.flush()
        result = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        lines = [line for line in log_path.read_text().splitlines()[1:] if line.strip()]
        raise GlmkitError(f"mmseqs easy-linclust failed (exit {result.returncode}): "
                          f"{lines[-1] if lines else 'no output'}; its log: {log_path}")
    return Path(f"{prefix}_cluster.tsv"), Path(f"{prefix}_rep_seq.fasta")


def read_clusters(path: Path) -> dict[str, str]:
    """member -> representative from MMseqs2's cluster TSV."""
    representative = {}
    with open(path) as fh:
        for line in fh:
            rep, member = line.rstrip("\n").split("\t")
            representative[member] = rep
    return representative


def linclust(sequences: Mapping[str, bytes], min_seq_id: float, coverage: float, threads: int = 1) -> dict[str, str]:
    """Cluster protein sequences held in memory; returns member id -> representative id.

    Ids must not contain white space. Every id maps somewhere (a singleton to itself).
    """
    with tempfile.TemporaryDirectory(prefix="glmkit-mmseqs-") as tmp:
        fasta = Path(tmp) / "in.faa"
        with open(fasta, "wb") as fh:
            for name, seq in sequences.items():
                fh.write(b">" + name.encode() + b"\n" + seq + b"\n")
        try:
            clusters, _ = easy_linclust(fasta, Path(tmp) / "out", Path(tmp) / "work", min_seq_id, coverage,
                                        threads=threads)
        except GlmkitError as e:  # keep the log: the temporary folder goes
            kept = Path(tempfile.mkstemp(prefix="glmkit-mmseqs-", suffix=".log")[1])
            shutil.copyfile(Path(tmp) / "out.log", kept)
            raise GlmkitError(str(e).replace(str(Path(tmp) / "out.log"), str(kept))) from None
        representative = read_clusters(clusters)
    missing = set(sequences) - set(representative)
    if missing:
        raise GlmkitError(f"mmseqs easy-linclust left {len(missing)} sequences unassigned")
    return representative
