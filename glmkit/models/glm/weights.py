"""Loading a gLM checkpoint for inference: the model, its configuration, its input normalisation.

One place for what contextualize, export-glm, paralog-match and operons need:
the checkpoint's files checked (checksums, schema, architecture), the model
built from config.json, the weights loaded by name and shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class LoadedGLM:
    model: object          # glmkit.models.glm.model.GLM, eval mode, on CPU
    cfg: object            # GLMConfig
    norm: object           # glmkit.models.glm.normalization.Normalization
    meta: dict             # config.json
    folder: Path           # the checkpoint folder


def load_glm(model_path: str | Path) -> LoadedGLM:
    from glmkit.models.glm.normalization import Normalization
    from glmkit.io.checkpoint import checkpoint_folder, load_checkpoint, load_weights
    from glmkit.models.glm.model import GLM, GLMConfig

    folder = checkpoint_folder(model_path)
    meta, weights, extras, _ = load_checkpoint(model_path, "gLM")
    cfg = GLMConfig.from_dict(meta.get("config"), folder / "config.json")
    model = load_weights(lambda: GLM(cfg), weights, folder / "model.safetensors").eval()
    norm = Normalization.from_checkpoint(meta, extras["normalization"], folder)
    return LoadedGLM(model, cfg, norm, meta, folder)
