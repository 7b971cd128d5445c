"""Fitted operon classifiers: one safetensors file (`glmkit operons fit -o NAME.safetensors`).

    coef        float64 (1, F)   logistic regression weights
    intercept   float64 (1,)
    metadata    schema "glmkit.operon-classifier", version, features ("attention", "distance-strand",
                "combined"), num_layers, num_heads (attention features: layer * heads + head),
                attention_queries ("plain" or "masked": how the maps it was fitted on were computed; absent in
                version-1 files, which are "plain"), log_attention ("1": attention features are each head's
                attention then its log(a + 0.001), so F = 2 x layers x heads; absent: "0"), glmkit version

A gLM model folder from `import-glm` may carry the published classifier as
operon_classifier.safetensors (coef, intercept, classes); `read_classifier`
accepts both.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from glmkit import __version__
from glmkit.errors import GlmkitError

SCHEMA, VERSION = "glmkit.operon-classifier", 1
KINDS = ("attention", "distance-strand", "combined")


def write_classifier(path: str | Path, kind: str, coef: np.ndarray, intercept: np.ndarray, num_layers: int | None,
                     num_heads: int | None, extra: dict | None = None, attention_queries: str = "plain",
                     log_attention: bool = False) -> None:
    from glmkit.io.safetensors_file import save_safetensors

    meta = {"schema": SCHEMA, "schema_version": str(VERSION), "features": kind,
            "num_layers": str(num_layers or 0), "num_heads": str(num_heads or 0),
            "attention_queries": attention_queries, "log_attention": str(int(log_attention)),
            "glmkit_version": __version__, "extra": json.dumps(extra or {})}
    save_safetensors({"coef": np.ascontiguousarray(coef, np.float64).reshape(1, -1),
                      "intercept": np.ascontiguousarray(intercept, np.float64).reshape(1)}, path, metadata=meta)


def read_classifier(path: str | Path) -> dict:
    """{"kind", "coef" (F,), "intercept", "num_layers", "num_heads", "path"} from a classifier file or a model
    folder holding an imported one."""
    from safetensors import safe_open

    path = Path(path)
    if path.is_dir():
        return _from_model_folder(path)
    try:
        with safe_open(str(path), "np") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as e:
        raise GlmkitError(f"{path}: not an operon classifier ({type(e).__name__})") from None
    if meta.get("schema") != SCHEMA or "coef" not in tensors or "intercept" not in tensors:
        raise GlmkitError(f"{path}: not an operon classifier (written by glmkit operons fit)")
    if int(meta.get("schema_version", 0)) > VERSION:
        raise GlmkitError(f"{path}: classifier version {meta['schema_version']} is newer than this glmkit reads")
    return {"kind": meta["features"], "coef": tensors["coef"].reshape(-1), "intercept": float(tensors["intercept"][0]),
            "num_layers": int(meta["num_layers"]), "num_heads": int(meta["num_heads"]), "path": str(path),
            "attention_queries": meta.get("attention_queries", "plain"),
            "log_attention": meta.get("log_attention", "0") == "1", "extra": json.loads(meta.get("extra", "{}"))}


def _from_model_folder(folder: Path) -> dict:
    from safetensors.numpy import load_file

    from glmkit.io.checkpoint import checkpoint_folder

    folder = checkpoint_folder(folder)
    file = folder / "operon_classifier.safetensors"
    if not file.is_file():
        raise GlmkitError(f"{folder}: this model has no operon classifier (import-glm with --operon-predictor, "
                          f"or fit one with glmkit operons fit)")
    try:
        meta = json.loads((folder / "config.json").read_text())
        tensors = load_file(str(file))
    except Exception as e:
        raise GlmkitError(f"{file}: unreadable ({type(e).__name__})") from None
    cfg = meta.get("config", {})
    return {"kind": "attention", "coef": tensors["coef"].reshape(-1), "intercept": float(tensors["intercept"][0]),
            "num_layers": int(cfg.get("num_layers", 0)), "num_heads": int(cfg.get("num_heads", 0)),
            "path": str(file), "attention_queries": "plain", "log_attention": False, "extra": {}}   # the paper's
