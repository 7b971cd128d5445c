"""`glmkit import-glm` and `export-glm`: the gLM authors' release (glm.bin, norm.pkl, pca.pkl,
operon_predictor.pkl) in and out.

import-glm makes a glmkit model checkpoint that `contextualize` (and
`operons`) use like one `pretrain` wrote. The checkpoint carries the weights, the normalisation and label PCA in the
reference's arithmetic (see glmkit.models.glm.normalization.Normalization), the operon
classifier when the release has one, the embedding model the release expects
(stated by the user; the published model's by default), and each file's
sha256 under "imported_from".

export-glm writes a glmkit gLM checkpoint in the release layout
(operon_predictor.pkl when the checkpoint has a classifier), for the reference
code and its users, plus glmkit.json, from which `import-glm` restores exactly
this model (its normalisation arithmetic included). The reference's
batch_data.py does not clip standardised embeddings; a model trained by glmkit
saw them clipped to +-10, so outside that range the reference pipeline feeds it
slightly other inputs than glmkit does (rare: docs/commands/import-glm.md).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from glmkit.errors import GlmkitError
from glmkit.io.files import atomic_outputs, claim_outputs

log = logging.getLogger("glmkit")


def run_import_glm(glm_bin: str, output: str, norm: str | None = None, pca: str | None = None,
                   operon_predictor: str | None = None, embedding_model: str | None = None,
                   embedding_layer: int | None = None, force: bool = False) -> dict:
    from glmkit.io.checkpoint import save_checkpoint
    from glmkit.io.glm_release import PUBLISHED_EMBEDDING_MODEL, read_release, release_paths
    from glmkit.models.glm.model import GLM, GLMConfig
    from glmkit.models.glm.weights import load_reference_state, reference_config
    from glmkit.models.glm import SPEC

    inputs = [str(p) for p in release_paths(glm_bin, norm, pca, operon_predictor) if p]   # defaults found too
    with claim_outputs([output], force, inputs):
        release = read_release(glm_bin, norm, pca, operon_predictor)
        cfg = reference_config(release.state, glm_bin)
        if release.glmkit.get("config"):  # exported by glmkit: dropout and eps are not in a state dict
            where = Path(glm_bin).parent / "glmkit.json"
            stated = GLMConfig.from_dict(release.glmkit["config"], where)
            for key, value in cfg.to_dict().items():   # the weights' shapes decide; checked before building
                if key not in ("layer_norm_eps", "dropout") and getattr(stated, key) != value:
                    raise GlmkitError(f"{where}: {key} {getattr(stated, key)}, but {glm_bin}'s tensors make it "
                                      f"{value}: a glmkit.json of another model")
            cfg = stated
        k = release.norm.label_components.shape[1]
        if cfg.label_dim != k + 1:
            raise GlmkitError(f"{pca or 'pca.pkl'}: {k} components, but {glm_bin} predicts labels of "
                              f"{cfg.label_dim} values ({k} + orientation expected)")
        try:
            model = load_reference_state(GLM(cfg), release.state)
        except (KeyError, RuntimeError) as e:
            raise GlmkitError(f"{glm_bin}: not the gLM layout ({type(e).__name__}: {str(e).splitlines()[0]})") \
                from None
        esm = dict(release.glmkit.get("embedding_model") or PUBLISHED_EMBEDDING_MODEL)
        esm["embed_dim"] = cfg.input_dim - 1
        if embedding_model:
            esm.update(name=embedding_model, sha256=None)
        if embedding_layer is not None:
            esm["layer"] = embedding_layer
        norm_arrays = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in release.norm.arrays().items()}
        extras = {"normalization": norm_arrays}
        info = {"embedding_model": esm, "normalization": {"arithmetic": release.norm.arithmetic},
                "imported_from": release.files, "step": release.glmkit.get("step")}
        if release.classifier is not None:
            features, heads = int(release.classifier["coef"].shape[1]), cfg.num_layers * cfg.num_heads
            if features != heads:   # refused now, not when operons predict first reads it
                raise GlmkitError(f"{operon_predictor or 'operon_predictor.pkl'}: a classifier of {features} "
                                  f"attention features; this model has {cfg.num_layers} layers x {cfg.num_heads} "
                                  f"heads = {heads}")
            extras["operon_classifier"] = {k: torch.from_numpy(v) for k, v in release.classifier.items()}
            info["operon_classifier"] = {"features": "attention, layer * heads + head",
                                         "n_features": int(release.classifier["coef"].shape[1])}
        save_checkpoint(Path(output), SPEC.architecture, cfg.to_dict(), model.state_dict(), extras, info)
    log.info(f"import-glm: {output}: gLM {cfg.num_layers} layers, hidden {cfg.hidden_size}, {cfg.num_heads} heads; "
             f"{release.norm.arithmetic} normalisation; embeddings from {esm['name']} layer {esm['layer']}"
             + ("; operon classifier" if release.classifier is not None else ""))
    return {"config": cfg.to_dict(), "files": release.files, "classifier": release.classifier is not None}


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
