"""`glmkit export-glm`: a glmkit gLM checkpoint in the gLM authors' release layout (glm.bin, norm.pkl, pca.pkl,
operon_predictor.pkl when the checkpoint has a classifier), for the reference code and its users, plus
glmkit.json, from which `import-glm` restores exactly this model (its normalisation arithmetic included).

The reference's batch_data.py does not clip standardised embeddings; a model
trained by glmkit saw them clipped to +-10, so outside that range the reference
pipeline feeds it slightly other inputs than glmkit does (rare: docs/usage.md).
"""

from __future__ import annotations

import logging
from pathlib import Path

from glmkit.io.files import atomic_outputs

log = logging.getLogger("glmkit")


def run_export_glm(model_path: str, output: str, force: bool = False) -> dict:
    from glmkit.glm_data import Normalization
    from glmkit.io.checkpoint import checkpoint_folder, load_checkpoint, load_weights
    from glmkit.io.glm_release import write_release
    from glmkit.models.glm import GLM, GLMConfig, to_reference_state
    from glmkit.pretrain import ARCHITECTURE

    folder = checkpoint_folder(model_path)
    meta, weights, extras, _ = load_checkpoint(model_path, ARCHITECTURE)
    cfg = GLMConfig.from_dict(meta.get("config"), folder / "config.json")
    model = load_weights(GLM(cfg), weights, folder / "model.safetensors")
    norm = Normalization.from_checkpoint(meta, extras["normalization"], folder)
    classifier = None
    if (folder / "operon_classifier.safetensors").exists():
        _, _, more, _ = load_checkpoint(model_path, ARCHITECTURE, extras=("operon_classifier",))
        classifier = {k: v.numpy() for k, v in more["operon_classifier"].items()}
    glmkit = {"normalization": {"arithmetic": norm.arithmetic}, "config": cfg.to_dict(),
              "embedding_model": meta.get("embedding_model"), "step": meta.get("step"),
              "exported_from": str(folder.resolve())}
    with atomic_outputs([output], force, [str(folder)]) as (tmp,):
        tmp.mkdir(parents=True)
        write_release(tmp, to_reference_state(model), norm, classifier, glmkit)
    log.info(f"export-glm: {output}: glm.bin, norm.pkl, pca.pkl"
             + (", operon_predictor.pkl" if classifier is not None else "") + ", glmkit.json")
    return {"files": sorted(p.name for p in Path(output).iterdir())}
