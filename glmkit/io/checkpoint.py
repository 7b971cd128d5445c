"""Model checkpoints: a folder written whole into a temporary name, then renamed into place.

    checkpoint/
      config.json          schema glmkit.glm-checkpoint, version, architecture, model config, embedding model
                           identity, normalisation shapes, training step, glmkit version, command line
      model.safetensors    weights
      normalization.safetensors   feature_mean, feature_std (ESM2 dims), label_mean, label_components
                           (ESM2 dims x label_dim - 1), label_scale (label_dim - 1)
      training_state.pt    optimiser, scheduler, RNG states, step (absent from inference-only exports)
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from glmkit import __version__
from glmkit.errors import GlmkitError
from glmkit.io.files import follow_umask, publish, remove
from glmkit.provenance import command_line

SCHEMA, VERSION = "glmkit.glm-checkpoint", 1


def save_checkpoint(folder: Path, architecture: str, config: dict, state: dict[str, torch.Tensor],
                    normalization: dict[str, torch.Tensor], info: dict, training_state: dict | None = None) -> None:
    from safetensors.torch import save_file

    folder = Path(folder)
    temp = folder.with_name(f".{folder.name}.partial")
    remove(temp)
    temp.mkdir(parents=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(temp / "model.safetensors"))
    save_file({k: v.contiguous().cpu() for k, v in normalization.items()}, str(temp / "normalization.safetensors"))
    if training_state is not None:
        torch.save(training_state, temp / "training_state.pt")
    meta = {"schema": SCHEMA, "schema_version": VERSION, "architecture": architecture, "config": config,
            "glmkit_version": __version__, "command_line": command_line(), **info}
    (temp / "config.json").write_text(json.dumps(meta, indent=2))
    follow_umask(temp)  # safetensors writes 0600
    publish(temp, folder)


def checkpoint_folder(path: str | Path) -> Path:
    """The checkpoint inside a pretrain output folder, or the folder itself."""
    path = Path(path)
    return path / "checkpoint" if (path / "checkpoint" / "config.json").exists() else path


def load_checkpoint(folder: Path, architecture: str, training: bool = False):
    """(meta, weights, normalization, training_state or None), refusing other schemas and architectures."""
    from safetensors.torch import load_file

    folder = checkpoint_folder(folder)
    try:
        meta = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        raise GlmkitError(f"{folder}: not a glmkit checkpoint (no readable config.json)") from None
    if meta.get("schema") != SCHEMA:
        raise GlmkitError(f"{folder}: not a glmkit checkpoint (schema {meta.get('schema')!r})")
    if meta.get("schema_version", 0) > VERSION:
        raise GlmkitError(f"{folder}: checkpoint version {meta['schema_version']} is newer than this glmkit reads "
                          f"({VERSION}); upgrade glmkit")
    if meta.get("architecture") != architecture:
        raise GlmkitError(f"{folder}: a {meta.get('architecture')} checkpoint; expected {architecture}")
    try:
        weights = load_file(str(folder / "model.safetensors"))
        normalization = load_file(str(folder / "normalization.safetensors"))
        state = torch.load(folder / "training_state.pt", weights_only=True) if training else None
    except Exception as e:
        raise GlmkitError(f"{folder}: unreadable checkpoint file ({type(e).__name__}: {str(e).splitlines()[0]})") from e
    return meta, weights, normalization, state
