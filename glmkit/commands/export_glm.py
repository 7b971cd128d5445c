"""`glmkit export-glm`: a glmkit gLM checkpoint in the gLM authors' release layout (glm.bin, norm.pkl, pca.pkl,
operon_predictor.pkl when the checkpoint has a classifier), for the reference code and its users, plus
glmkit.json, from which `import-glm` restores exactly this model (its normalisation arithmetic included).

The reference's batch_data.py does not clip standardised embeddings; a model
trained by glmkit saw them clipped to +-10, so outside that range the reference
pipeline feeds it slightly other inputs than glmkit does (rare: docs/commands/import-glm.md).
"""

from __future__ import annotations

import logging
from pathlib import Path

from glmkit.io.files import atomic_outputs

log = logging.getLogger("glmkit")


def run_export_glm(model_path: str, output: str, force: bool = False) -> dict:
    from glmkit.io.checkpoint import load_checkpoint
    from glmkit.io.glm_release import write_release
    from glmkit.models.glm.weights import to_reference_state
    from glmkit.models.glm.weights import load_glm
    from glmkit.models.glm import SPEC

    loaded = load_glm(model_path)
    folder, cfg, model, norm = loaded.folder, loaded.cfg, loaded.model, loaded.norm
    meta = loaded.meta
    classifier = None
    if (folder / "operon_classifier.safetensors").exists():
        _, _, more, _ = load_checkpoint(model_path, SPEC.architecture, extras=("operon_classifier",))
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
