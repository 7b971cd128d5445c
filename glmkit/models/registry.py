"""The model families, one line each: to add a family, add its folder (see glmkit/models/spec.py) and its line."""

from __future__ import annotations

import json
from pathlib import Path

from glmkit.errors import GlmkitUsageError
from glmkit.models import glm, glm2
from glmkit.models.spec import ModelSpec

FAMILIES: tuple[ModelSpec, ...] = (
    glm.SPEC,
    glm2.SPEC,
)
BY_KEY = {spec.key: spec for spec in FAMILIES}
BY_ARCHITECTURE = {spec.architecture: spec for spec in FAMILIES}


def family(key: str) -> ModelSpec:
    """The family of an --arch value."""
    if key not in BY_KEY:
        raise GlmkitUsageError(f"--arch {key}: expected {' or '.join(BY_KEY)}")
    return BY_KEY[key]


def family_of(model_path: str | Path) -> ModelSpec:
    """The family of a model folder: a glmkit checkpoint says its architecture; a published folder is known by
    its config.json's keys; anything else is taken for a gLM, whose loader then says what is wrong."""
    from glmkit.io.checkpoint import SCHEMA, checkpoint_folder

    try:
        config = json.loads((checkpoint_folder(model_path) / "config.json").read_text())
    except (OSError, ValueError):
        config = {}
    config = config if isinstance(config, dict) else {}
    if config.get("schema") == SCHEMA:
        return BY_ARCHITECTURE.get(config.get("architecture", "gLM"), glm.SPEC)
    return next((spec for spec in FAMILIES if spec.published_keys and spec.published_keys <= set(config)), glm.SPEC)
