"""Published gLM2 checkpoints (tattabio/gLM2_150M, gLM2_650M): a Hugging Face folder into glmkit's GLM2.

config.json gives dim, depth, heads, vocab_size, swiglu_multiple_of,
ffn_dim_multiplier (must be null: the published models have none) and
norm_eps; the weights carry the names of ../shared/DESIGN.md, mapped here to
glmkit/models/glm2/model.py's. A tensor missing, extra or of another shape than the
configuration makes it is refused with one line naming it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from glmkit.errors import GlmkitError
from glmkit.models.glm2.model import GLM2, GLM2Config
from glmkit.models.glm2.tokens import PUBLISHED, Tokenisation, tokenisation_of

# published name -> glmkit's (regular expressions over the whole key)
PUBLISHED_NAMES = (
    (r"glm2\.tok_embeddings\.", "tok_embeddings."),
    (r"glm2\.encoder\.layers\.(\d+)\.", r"layers.\1."),
    (r"lm_head\.norm\.", "head_norm."),
    (r"lm_head\.proj_output\.", "head."),
)


def glmkit_name(published: str) -> str:
    for pattern, ours in PUBLISHED_NAMES:
        if re.match(pattern, published):
            return re.sub(pattern, ours, published, count=1)
    return published


def published_name(ours: str) -> str:
    for pattern, theirs in (("tok_embeddings.", "glm2.tok_embeddings."), ("head_norm.", "lm_head.norm."),
                            ("head.", "lm_head.proj_output.")):
        if ours.startswith(pattern):
            return theirs + ours[len(pattern):]
    return re.sub(r"^layers\.(\d+)\.", r"glm2.encoder.layers.\1.", ours)


def load_glm2_folder(path: str | Path) -> tuple[GLM2, str]:
    """(the model in eval mode, the weights' sha256)."""
    from glmkit.io.checkpoint import load_weights
    from glmkit.models.hf_folder import read_config, read_weights, weights_sha256

    path = Path(path)
    config = read_config(path, "gLM2")
    try:
        cfg = GLM2Config(dim=int(config["dim"]), depth=int(config["depth"]), heads=int(config["heads"]),
                         vocab_size=int(config.get("vocab_size", 37)),
                         swiglu_multiple_of=int(config.get("swiglu_multiple_of", 256)),
                         norm_eps=float(config.get("norm_eps", 1e-5)))
    except (KeyError, TypeError, ValueError) as e:
        raise GlmkitError(f"{path / 'config.json'}: not a gLM2 configuration (no valid {e})") from None
    if config.get("ffn_dim_multiplier") is not None:
        raise GlmkitError(f"{path / 'config.json'}: ffn_dim_multiplier {config['ffn_dim_multiplier']} is not supported "
                          f"(the published gLM2 models have none)")
    if min(cfg.dim, cfg.depth, cfg.heads, cfg.vocab_size, cfg.swiglu_multiple_of) <= 0 or cfg.dim % cfg.heads:
        raise GlmkitError(f"{path / 'config.json'}: dim {cfg.dim}, depth {cfg.depth}, heads {cfg.heads}: not a "
                          f"model's shape (positive, dim a multiple of heads)")
    files, published = read_weights(path)
    model = load_weights(lambda: GLM2(cfg), {glmkit_name(k): v for k, v in published.items()}, path,
                         published_name, "config.json")
    return model.eval(), weights_sha256(files)


@dataclass
class LoadedGLM2:
    model: GLM2            # eval mode, on CPU
    cfg: GLM2Config
    meta: dict             # a glmkit checkpoint's config.json; for a published folder: architecture, config, files
    folder: Path
    tokens: Tokenisation   # how its chunks are tokenised: as it was trained (glmkit/models/glm2/tokens.py)


def load_glm2(model_path: str | Path) -> LoadedGLM2:
    """A gLM2 from a glmkit checkpoint (`pretrain --arch glm2`) or a published Hugging Face folder."""
    from glmkit.io.checkpoint import SCHEMA, checkpoint_folder, load_checkpoint, load_weights

    folder = checkpoint_folder(model_path)
    if _config(folder).get("schema") == SCHEMA:
        meta, weights, _, _ = load_checkpoint(folder, "gLM2", extras=())
        cfg = GLM2Config.from_dict(meta.get("config"), folder / "config.json")
        model = load_weights(lambda: GLM2(cfg), weights, folder / "model.safetensors").eval()
        return LoadedGLM2(model, cfg, meta, folder, tokenisation_of(meta.get("tokens"), folder / "config.json"))
    model, sha = load_glm2_folder(folder)
    return LoadedGLM2(model, model.cfg, {"architecture": "gLM2", "config": model.cfg.to_dict(),
                                         "files": {"weights": sha}, "published": True,
                                         "tokens": PUBLISHED.record()}, folder, PUBLISHED)


def _config(folder: Path) -> dict:
    import json

    try:
        found = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


load = load_glm2   # the family's loader (glmkit/models/spec.py)
