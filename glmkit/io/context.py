"""The context store that `glmkit contextualize` writes (schema glmkit.context; docs/FORMATS.md): its one
writer, which every model family's context job fills group by group, and the reader every later command uses
(gene tables whole, attention maps window by window).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from glmkit.errors import GlmkitError
from glmkit.io.store import ColumnWriter, close_writers, create_store, finish_store, open_store

SCHEMA = "glmkit.context"
REQUIRED = ("genes/id", "genes/contig", "genes/embedding", "contigs/name", "contigs/embedding")


class ContextStore:
    def __init__(self, path: str | Path):
        self.path = str(path)
        self.group = open_store(path, SCHEMA, required=REQUIRED)
        self.attrs = self.group.attrs.asdict()
        self.config = self.attrs.get("model", {}).get("config", {})
        # how the maps were computed: "plain" (one pass per window) or "masked" (row i with gene i masked)
        self.attention_queries = self.attrs.get("attention_queries", "plain")
        self.n_genes = self.group["genes/id"].shape[0]

    @property
    def has_attention(self) -> bool:
        return "attention" in self.group and "windows" in self.group

    def gene_ids(self) -> np.ndarray:
        return self.group["genes/id"][:].astype(object)

    def gene_contigs(self) -> np.ndarray:
        return self.group["genes/contig"][:]

    def contig_names(self) -> np.ndarray:
        return self.group["contigs/name"][:].astype(object)

    def windows(self) -> tuple[np.ndarray, np.ndarray]:
        """(first gene, number of genes) of every window whose attention is stored."""
        self.require_attention()
        return self.group["windows/first_gene"][:], self.group["windows/n_genes"][:]

    def require_attention(self) -> None:
        if not self.has_attention:
            raise GlmkitError(f"{self.path}: no attention maps in this context store; run contextualize with "
                              f"--attention")

    def attention(self, windows: np.ndarray, block: int = 256) -> Iterator[tuple[int, np.ndarray]]:
        """(window, maps (layers, heads, n, n) float16) for the given window numbers in increasing order, read in
        blocks of about ``block`` consecutive windows (one range read each)."""
        self.require_attention()
        layers, heads = int(self.config["num_layers"]), int(self.config["num_heads"])
        offsets = self.group["attention/offsets"]
        sizes = self.group["windows/n_genes"]
        data = self.group["attention/data"]
        windows = np.unique(np.asarray(windows, dtype=np.int64))
        for s in range(0, len(windows), block):
            part = windows[s:s + block]
            lo, hi = int(part[0]), int(part[-1]) + 1
            off = offsets[lo:hi + 1]
            n = sizes[lo:hi]
            flat = data[int(off[0]):int(off[-1])]
            for w in part:
                k = int(w) - lo
                a, b = int(off[k] - off[0]), int(off[k + 1] - off[0])
                yield int(w), flat[a:b].reshape(layers, heads, int(n[k]), int(n[k]))


class ContextStoreWriter:
    """A context store being written: its provenance and model attributes, named columns appended group by group
    (ColumnWriter: whole chunks, checksummed), then the summary and the manifest when finished."""

    def __init__(self, path, parameters: dict, inputs, model: dict, attention_queries: str | None = None):
        self.group = create_store(path, SCHEMA, parameters, inputs)
        self.group.attrs["model"] = model
        if attention_queries is not None:
            self.group.attrs["attention_queries"] = attention_queries
        self.columns: dict[str, ColumnWriter] = {}

    def add(self, name: str, dtype, chunk: int | None = None, row_shape: tuple = ()) -> None:
        self.columns[name] = ColumnWriter(self.group, name, dtype, chunk, row_shape)

    def extend(self, name: str, values) -> None:
        self.columns[name].extend(values)

    def close_columns(self) -> None:
        close_writers(list(self.columns.values()))

    def finish(self, summary: dict) -> None:
        self.group.attrs["summary"] = summary
        finish_store(self.group)
