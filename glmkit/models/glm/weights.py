"""The gLM's weights: a glmkit checkpoint loaded for inference (the model, its configuration, its input
normalisation), and the published glm.bin layout read and written.

One place for what contextualize, export-glm, import-glm, paralog-match and
operons need: the checkpoint's files checked (checksums, schema,
architecture), the model built from config.json, the weights loaded by name
and shape; glm.bin's names mapped to glmkit's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from glmkit.models.glm.model import GLM, GLMConfig


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

    folder = checkpoint_folder(model_path)
    meta, weights, extras, _ = load_checkpoint(model_path, "gLM")
    cfg = GLMConfig.from_dict(meta.get("config"), folder / "config.json")
    model = load_weights(lambda: GLM(cfg), weights, folder / "model.safetensors").eval()
    norm = Normalization.from_checkpoint(meta, extras["normalization"], folder)
    return LoadedGLM(model, cfg, norm, meta, folder)


load = load_glm   # the family's loader (glmkit/models/spec.py)


# -- the published checkpoint layout -------------------------------------------------------------------------

REFERENCE_NAMES = {  # ours -> glm.bin (transformers 4.22 RobertaModel inside gLM's wrapper)
    "input_projection": "dense",
    "input_norm": "roberta.roberta.embeddings.LayerNorm",
    "predict": "roberta.lm_head.dense",
    "likelihood": "roberta.lm_head.dense_prob",
}
REFERENCE_BLOCK_NAMES = {
    "attention.query": "attention.self.query", "attention.key": "attention.self.key",
    "attention.value": "attention.self.value", "attention_out": "attention.output.dense",
    "attention_norm": "attention.output.LayerNorm", "intermediate": "intermediate.dense",
    "output": "output.dense", "output_norm": "output.LayerNorm",
}


def reference_name_pairs(num_layers: int):
    """(glmkit's name, glm.bin's name) of every tensor but the token-type embedding (a row there, a vector here)."""
    for ours, theirs in REFERENCE_NAMES.items():
        for kind in ("weight", "bias"):
            yield f"{ours}.{kind}", f"{theirs}.{kind}"
    for i in range(num_layers):
        prefix = f"roberta.roberta.encoder.layer.{i}."
        yield f"blocks.{i}.attention.distance_embedding.weight", f"{prefix}attention.self.distance_embedding.weight"
        for ours, theirs in REFERENCE_BLOCK_NAMES.items():
            for kind in ("weight", "bias"):
                yield f"blocks.{i}.{ours}.{kind}", f"{prefix}{theirs}.{kind}"


def load_reference_state(model: GLM, reference: dict[str, torch.Tensor]) -> GLM:
    """Load a state dict laid out like the published glm.bin into ``model`` (unused keys are ignored)."""
    state = {"token_type": reference["roberta.roberta.embeddings.token_type_embeddings.weight"][0]}
    state.update({ours: reference[theirs] for ours, theirs in reference_name_pairs(model.cfg.num_layers)})
    model.load_state_dict(state)
    return model


def reference_config(reference: dict[str, torch.Tensor], where="glm.bin") -> GLMConfig:
    """The shape of a glm.bin-style state dict; one line naming the first tensor it lacks."""
    from glmkit.errors import GlmkitError

    try:
        return _reference_config(reference)
    except KeyError as e:
        raise GlmkitError(f"{where}: not the gLM layout (no tensor {e.args[0]})") from None
    except (IndexError, ZeroDivisionError, AttributeError):
        raise GlmkitError(f"{where}: not the gLM layout (tensors of impossible shapes)") from None


def _reference_config(reference: dict[str, torch.Tensor]) -> GLMConfig:
    layers = {int(m.group(1)) for k in reference if (m := re.match(r"roberta\.roberta\.encoder\.layer\.(\d+)\.", k))}
    hidden = reference["dense.weight"].shape[0]
    head_dim = reference["roberta.roberta.encoder.layer.0.attention.self.distance_embedding.weight"].shape[1]
    return GLMConfig(num_layers=len(layers), hidden_size=hidden, num_heads=hidden // head_dim,
                     intermediate_size=reference["roberta.roberta.encoder.layer.0.intermediate.dense.weight"].shape[0],
                     max_position_embeddings=(reference[
                         "roberta.roberta.encoder.layer.0.attention.self.distance_embedding.weight"].shape[0] + 1) // 2,
                     input_dim=reference["dense.weight"].shape[1],
                     num_predictions=reference["roberta.lm_head.dense_prob.weight"].shape[0],
                     label_dim=reference["roberta.lm_head.dense.weight"].shape[0]
                     // reference["roberta.lm_head.dense_prob.weight"].shape[0])


def to_reference_state(model: GLM) -> dict[str, torch.Tensor]:
    """``model``'s weights under glm.bin's names (the inverse of load_reference_state)."""
    ours = model.state_dict()
    state = {"roberta.roberta.embeddings.token_type_embeddings.weight": ours["token_type"][None].clone()}
    state.update({theirs: ours[mine] for mine, theirs in reference_name_pairs(model.cfg.num_layers)})
    return state
