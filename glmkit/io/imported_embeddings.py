"""Per-protein embeddings computed elsewhere, read for `glmkit embed --import-embeddings`.

Three layouts, told apart by the path:

- a folder of fair-esm extractor files (scripts/extract.py --include mean):
  one ``LABEL.pt`` per protein holding ``{"label", "mean_representations":
  {layer: tensor}}``, read with ``torch.load(weights_only=True)``;
- a pickle (``.pkl``/``.pickle``) of ``[(protein id, array), ...]`` as the gLM's
  plm_embed.py writes, read with glmkit.io.safe_pickle (arrays only);
- a ``.npy`` matrix (one row per protein, ``allow_pickle=False``, memory-mapped)
  with a text file of ids, one per line in row order (the first tab-separated
  column; a header line ``id`` is skipped).

An id is the first word of the label, as FASTA readers take it. Vectors are
read lazily per protein where the layout allows (folders, .npy).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from glmkit.errors import GlmkitError


class ImportedEmbeddings:
    """``ids`` in file order; ``vector(i)`` the i-th as float32, checked for dimension and NaN."""

    def __init__(self, path: str | Path, layer: int | None = None, ids_path: str | Path | None = None):
        self.path = Path(path)
        self.layer = layer
        self._vectors = None       # a list or a memory-mapped matrix
        self._files: list[Path] | None = None
        if self.path.is_dir():
            self._files = sorted(self.path.glob("*.pt"))
            if not self._files:
                raise GlmkitError(f"{self.path}: no .pt files (fair-esm extract.py output expected)")
            self.ids = [self._first_word(p.stem) for p in self._files]
            self.dim = len(self._read_pt(0))
        elif self.path.suffix in (".pkl", ".pickle"):
            self._read_pickle()
        elif self.path.suffix == ".npy":
            self._read_npy(ids_path)
        else:
            raise GlmkitError(f"{self.path}: not a folder of fair-esm .pt files, a .pkl of (id, array) pairs or "
                              f"a .npy matrix")
        if ids_path is not None and self.path.suffix != ".npy":
            raise GlmkitError(f"--import-ids goes with a .npy matrix, not {self.path.name}")
        seen: dict[str, int] = {}
        for i, name in enumerate(self.ids):
            if name in seen:
                raise GlmkitError(f"{self.path}: protein id '{name}' appears twice")
            seen[name] = i
        self.index = seen

    @staticmethod
    def _first_word(label: str) -> str:
        return str(label).split()[0] if str(label).split() else str(label)

    def _read_pt(self, i: int) -> np.ndarray:
        import torch

        path = self._files[i]
        try:
            found = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise GlmkitError(f"{path}: not a readable fair-esm extract file ({type(e).__name__})") from None
        means = found.get("mean_representations") if isinstance(found, dict) else None
        if not isinstance(means, dict) or not means:
            raise GlmkitError(f"{path}: no mean_representations (run fair-esm's extract.py with --include mean)")
        if self.layer is None:
            if len(means) > 1:
                raise GlmkitError(f"{path}: layers {sorted(means)}: say which with --layer")
            self.layer = next(iter(means))
        if self.layer not in means:
            raise GlmkitError(f"{path}: no layer {self.layer} (it has {sorted(means)})")
        label = found.get("label")
        if label is not None and self._first_word(label) != self.ids[i]:
            raise GlmkitError(f"{path}: label '{label}' does not match its file name")
        return np.asarray(means[self.layer].float().numpy())

    def _read_pickle(self) -> None:
        from glmkit.io.safe_pickle import load_pickle

        found = load_pickle(self.path)
        if not isinstance(found, (list, tuple)) or not all(isinstance(x, (list, tuple)) and len(x) == 2
                                                           for x in found):
            raise GlmkitError(f"{self.path}: expected a pickled list of (protein id, array) pairs")
        if not found:
            raise GlmkitError(f"{self.path}: no embeddings in it")
        self.ids = [self._first_word(k) for k, _ in found]
        self._vectors = [v for _, v in found]
        first = np.asarray(self._vectors[0])
        self.dim = first.shape[-1] if first.ndim else 0

    def _read_npy(self, ids_path) -> None:
        if ids_path is None:
            raise GlmkitError(f"{self.path}: a .npy matrix needs --import-ids, a file of its row ids")
        try:
            matrix = np.load(self.path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as e:
            raise GlmkitError(f"{self.path}: not a readable .npy matrix ({str(e).splitlines()[0]})") from None
        if matrix.ndim != 2 or matrix.dtype.kind not in "fiu":
            raise GlmkitError(f"{self.path}: shape {matrix.shape} of {matrix.dtype}; a 2-D numeric matrix expected")
        from glmkit.io.files import InputFile
        from glmkit.io.tsv import text_lines

        lines = [line.split("\t")[0].strip() for _, line in text_lines(InputFile(ids_path)) if line.strip()]
        if lines and lines[0] == "id":
            lines = lines[1:]
        if len(lines) != matrix.shape[0]:
            raise GlmkitError(f"{ids_path}: {len(lines):,} ids for the {matrix.shape[0]:,} rows of {self.path.name}")
        self.ids, self._vectors, self.dim = lines, matrix, matrix.shape[1]

    def __len__(self) -> int:
        return len(self.ids)

    def vector(self, i: int) -> np.ndarray:
        v = self._read_pt(i) if self._files is not None else self._vectors[i]
        if not isinstance(v, np.ndarray) or v.dtype.kind not in "fiu":
            raise GlmkitError(f"{self.path}: the embedding of '{self.ids[i]}' is not a numeric array")
        v = np.asarray(v, dtype=np.float32)
        if v.shape != (self.dim,):
            raise GlmkitError(f"{self.path}: the embedding of '{self.ids[i]}' has shape {v.shape}, the first one "
                              f"({self.dim},)")
        if not np.isfinite(v).all():
            raise GlmkitError(f"{self.path}: the embedding of '{self.ids[i]}' holds NaN or infinite values")
        return v
