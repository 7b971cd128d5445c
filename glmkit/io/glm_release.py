"""The gLM authors' release layout: read it into glmkit's model, write glmkit's model out in it.

    glm.bin                 torch state dict of the reference gLM module (key names in docs/FORMATS.md)
    norm.pkl                {"mean": float64 (1280,), "std": float64 (1280,)}: the ESM2 standardisation
    pca.pkl                 scikit-learn PCA(n_components=99, whiten=True) fitted on standardised embeddings
    operon_predictor.pkl    scikit-learn LogisticRegression over 190 attention features (optional)
    glmkit.json             written by `glmkit export-glm` only: the normalisation arithmetic, model
                            configuration and embedding model, which the four files cannot say

The pickles are read with glmkit.io.safe_pickle (plain data only, no
scikit-learn needed); writing pca.pkl and operon_predictor.pkl needs
scikit-learn, since the reference code calls their methods.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from glmkit.errors import GlmkitError
from glmkit.io.files import file_sha256
from glmkit.io.safe_pickle import PickledEstimator, load_pickle

FILES = ("glm.bin", "norm.pkl", "pca.pkl", "operon_predictor.pkl")
# the ESM2 the published gLM was trained on (gLM's plm_embed.py): mean of layer 33 over residues
PUBLISHED_EMBEDDING_MODEL = {"name": "esm2_t33_650M_UR50D", "sha256": None, "embed_dim": 1280, "layer": 33,
                             "max_residues": None, "long": None, "pooling": "mean"}


@dataclass
class Release:
    state: dict[str, torch.Tensor]      # glm.bin, reference key names
    norm: object                        # glmkit.models.glm.normalization.Normalization
    classifier: dict | None             # {"coef": (1, F) float64, "intercept": (1,) float64, "classes": (2,)}
    files: dict[str, dict]              # name -> {"path", "sha256"} of every file read
    glmkit: dict                        # glmkit.json's content ({} for the authors' own release)


def _array(value, where: str, name: str, shape: tuple | None = None) -> np.ndarray:
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "fiu":
        raise GlmkitError(f"{where}: {name} is not a numeric array")
    if shape is not None and value.shape != shape:
        raise GlmkitError(f"{where}: {name} has shape {value.shape}, expected {shape}")
    if not np.isfinite(value).all():
        raise GlmkitError(f"{where}: {name} holds NaN or infinite values")
    return value


def _estimator(path: Path, name: str) -> dict:
    found = load_pickle(path)
    if not isinstance(found, PickledEstimator) or found.name != name or found.state is None:
        what = found.name if isinstance(found, PickledEstimator) else type(found).__name__
        raise GlmkitError(f"{path}: a pickled {what}, expected a scikit-learn {name}")
    return found.state


def read_norm(path: Path) -> tuple[np.ndarray, np.ndarray]:
    found = load_pickle(path)
    if not isinstance(found, dict) or not {"mean", "std"} <= set(found):
        raise GlmkitError(f"{path}: expected a pickled dict with 'mean' and 'std' arrays")
    mean = _array(found["mean"], str(path), "mean")
    std = _array(found["std"], str(path), "std", mean.shape)
    if mean.ndim != 1:
        raise GlmkitError(f"{path}: mean has shape {mean.shape}, expected one value per embedding dimension")
    if (std <= 0).any():
        raise GlmkitError(f"{path}: std has values <= 0 (dimension {int(np.flatnonzero(std <= 0)[0])})")
    return mean.astype(np.float64), std.astype(np.float64)


def read_pca(path: Path, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean (dim,), components (dim, k), scale (k,)) such that labels = (z - mean) @ components * scale."""
    state = _estimator(path, "PCA")
    where = str(path)
    if "components_" not in state:
        raise GlmkitError(f"{path}: the PCA is not fitted (no components_)")
    components = _array(state["components_"], where, "components_")
    if components.ndim != 2 or components.shape[1] != dim:
        raise GlmkitError(f"{path}: components_ has shape {components.shape}, expected (k, {dim}) for "
                          f"{dim}-dim embeddings")
    k = components.shape[0]
    mean = _array(state.get("mean_", np.zeros(dim)), where, "mean_", (dim,))
    if state.get("whiten", False):
        variance = _array(state.get("explained_variance_"), where, "explained_variance_", (k,))
        # scikit-learn's transform divides by sqrt(explained_variance_), floored at the dtype's eps
        scale = 1.0 / np.maximum(np.sqrt(variance.astype(np.float64)), np.finfo(np.float64).eps)
    else:
        scale = np.ones(k)
    return mean.astype(np.float64), components.T.astype(np.float64), scale


def read_classifier(path: Path) -> dict:
    state = _estimator(path, "LogisticRegression")
    where = str(path)
    coef = _array(state.get("coef_"), where, "coef_")
    if coef.ndim != 2 or coef.shape[0] != 1:
        raise GlmkitError(f"{path}: coef_ has shape {coef.shape}; a binary classifier (1, features) is expected")
    intercept = _array(state.get("intercept_"), where, "intercept_", (1,))
    classes = np.asarray(state.get("classes_", np.array([0, 1])))
    if classes.shape != (2,):
        raise GlmkitError(f"{path}: classes_ has shape {classes.shape}; a binary classifier is expected")
    return {"coef": coef.astype(np.float64), "intercept": intercept.astype(np.float64),
            "classes": classes.astype(np.int64)}


def read_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise GlmkitError(f"{path}: no such file") from None
    except Exception as e:
        raise GlmkitError(f"{path}: not a readable PyTorch state dict ({type(e).__name__})") from None
    if not isinstance(state, dict) or "dense.weight" not in state:
        raise GlmkitError(f"{path}: not a gLM state dict (no dense.weight: see docs/FORMATS.md)")
    from glmkit.io.checkpoint import require_finite

    require_finite(state, path)
    return state


def release_paths(glm_bin, norm=None, pca=None, operon_predictor=None) -> tuple:
    """(glm.bin, norm.pkl, pca.pkl, operon_predictor.pkl or None, glmkit.json or None): the files a release is
    read from, those not named found in glm.bin's folder. Every one is an input of the run that reads them."""
    glm_bin = Path(glm_bin)
    folder = glm_bin.parent
    if operon_predictor is None and (folder / "operon_predictor.pkl").exists():
        operon_predictor = folder / "operon_predictor.pkl"
    extra = folder / "glmkit.json"
    return (glm_bin, Path(norm or folder / "norm.pkl"), Path(pca or folder / "pca.pkl"),
            Path(operon_predictor) if operon_predictor else None, extra if extra.is_file() else None)


def read_release(glm_bin: str | Path, norm: str | Path | None = None, pca: str | Path | None = None,
                 operon_predictor: str | Path | None = None) -> Release:
    """The release's files; norm.pkl, pca.pkl, operon_predictor.pkl and glmkit.json default to glm.bin's folder
    (operon_predictor.pkl is optional there)."""
    from glmkit.models.glm.normalization import Normalization

    glm_bin, norm, pca, operon_predictor, extra = release_paths(glm_bin, norm, pca, operon_predictor)
    from glmkit.io.files import InputFile

    InputFile(glm_bin).check()   # the weights first: a missing or looping glm.bin is named as such
    for role, path in (("norm", norm), ("pca", pca)):
        if not path.is_file():
            what = "is a folder, not a file" if path.is_dir() else "no such file"
            raise GlmkitError(f"{path}: {what} (the release's {role}.pkl; name it with --{role})")
    glmkit = {}
    if extra is not None:
        try:
            glmkit = json.loads(extra.read_text())
        except ValueError:
            raise GlmkitError(f"{extra}: not JSON") from None
        if not isinstance(glmkit, dict):
            raise GlmkitError(f"{extra}: not a JSON object (export-glm writes one)")
    state = read_state(glm_bin)
    mean, std = read_norm(norm)
    input_dim = int(state["dense.weight"].shape[1])
    if input_dim != len(mean) + 1:
        raise GlmkitError(f"{norm}: {len(mean)} dimensions, but {glm_bin} takes {input_dim - 1} (+ orientation)")
    label_mean, components, scale = read_pca(pca, len(mean))
    arithmetic = glmkit.get("normalization", {}).get("arithmetic", "reference")
    if arithmetic == "glmkit":  # written by export-glm from float32 arrays: exactly those again
        mean, std, label_mean, components, scale = (a.astype(np.float32) for a in
                                                    (mean, std, label_mean, components, scale))
    normalization = Normalization(mean, std, components, scale, label_mean, arithmetic)
    classifier = read_classifier(Path(operon_predictor)) if operon_predictor else None
    read = [glm_bin, norm, pca] + ([Path(operon_predictor)] if operon_predictor else [])
    files = {p.name: {"path": str(p.resolve()), "sha256": file_sha256(p)} for p in read}
    return Release(state, normalization, classifier, files, glmkit)


def write_release(folder: Path, state: dict[str, torch.Tensor], norm, classifier: dict | None, glmkit: dict) -> None:
    """The release files in ``folder`` (which exists and is empty). Needs scikit-learn for the two estimators."""
    try:
        from sklearn.decomposition import PCA
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        raise GlmkitError("writing pca.pkl needs scikit-learn (the reference code calls its methods): "
                          "pip install scikit-learn") from None
    torch.save({k: v.detach().cpu().contiguous() for k, v in state.items()}, folder / "glm.bin")
    with open(folder / "norm.pkl", "wb") as fh:
        pickle.dump({"mean": np.asarray(norm.feature_mean, np.float64),
                     "std": np.asarray(norm.feature_std, np.float64)}, fh, protocol=4)
    dim, k = norm.label_components.shape
    pca = PCA(n_components=k, whiten=True)
    pca.mean_ = np.zeros(dim) if norm.label_mean is None else np.asarray(norm.label_mean, np.float64)
    pca.components_ = np.ascontiguousarray(np.asarray(norm.label_components, np.float64).T)
    pca.explained_variance_ = 1.0 / np.asarray(norm.label_scale, np.float64) ** 2
    # what the fit would also have set; the total variance is not kept, so ratios are of the kept components
    pca.explained_variance_ratio_ = pca.explained_variance_ / pca.explained_variance_.sum()
    pca.n_components_, pca.n_features_in_, pca.noise_variance_ = k, dim, 0.0
    with open(folder / "pca.pkl", "wb") as fh:
        pickle.dump(pca, fh, protocol=4)
    if classifier is not None:
        model = LogisticRegression()
        model.coef_, model.intercept_ = classifier["coef"], classifier["intercept"]
        model.classes_, model.n_features_in_ = classifier["classes"], classifier["coef"].shape[1]
        with open(folder / "operon_predictor.pkl", "wb") as fh:
            pickle.dump(model, fh, protocol=4)
    (folder / "glmkit.json").write_text(json.dumps(glmkit, indent=2))
