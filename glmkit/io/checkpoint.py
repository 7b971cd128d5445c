"""Model checkpoints: a folder written whole into a temporary name, then renamed into place.

    checkpoint/
      config.json          schema glmkit.glm-checkpoint, version, architecture, model config, embedding model
                           identity, normalisation shapes, training step, glmkit version, command line
      model.safetensors    weights
      normalization.safetensors   feature_mean, feature_std (ESM2 dims), label_mean, label_components
                           (ESM2 dims x label_dim - 1), label_scale (label_dim - 1)
      training_state.pt    optimiser, scheduler, RNG states, step (absent from inference-only exports)

config.json records each file's sha256 (``files``); loading checks them, so a
damaged weight file is refused by name instead of being used.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from glmkit import __version__
from glmkit.errors import GlmkitError
from glmkit.io.files import file_sha256, follow_umask, publish, remove
from glmkit.io.safetensors_file import save_safetensors
from glmkit.provenance import command_line

SCHEMA, VERSION = "glmkit.glm-checkpoint", 1


def save_checkpoint(folder: Path, architecture: str, config: dict, state: dict[str, torch.Tensor],
                    extras: dict[str, dict[str, torch.Tensor]], info: dict, training_state: dict | None = None) -> None:
    """Write ``folder`` whole (under a temporary name, then renamed): the weights, each of ``extras`` as
    NAME.safetensors (the gLM: normalization), the training state, and config.json with every file's sha256."""
    folder = Path(folder)
    temp = folder.with_name(f".{folder.name}.partial")
    remove(temp)
    temp.mkdir(parents=True)
    save_safetensors({k: v.detach().contiguous().cpu() for k, v in state.items()}, temp / "model.safetensors")
    for name, tensors in extras.items():
        save_safetensors({k: v.contiguous().cpu() for k, v in tensors.items()}, temp / f"{name}.safetensors")
    if training_state is not None:
        torch.save(training_state, temp / "training_state.pt")
    files = {f.name: file_sha256(f) for f in sorted(temp.iterdir())}
    meta = {"schema": SCHEMA, "schema_version": VERSION, "architecture": architecture, "config": config,
            "glmkit_version": __version__, "command_line": command_line(), **info, "files": files}
    (temp / "config.json").write_text(json.dumps(meta, indent=2))
    follow_umask(temp)  # safetensors writes 0600
    publish(temp, folder)


def checkpoint_folder(path: str | Path) -> Path:
    """The checkpoint inside a pretrain output folder, or the folder itself."""
    path = Path(path)
    return path / "checkpoint" if (path / "checkpoint" / "config.json").exists() else path


def load_checkpoint(folder: Path, architecture: str, training: bool = False, extras: tuple = ("normalization",)):
    """(meta, weights, {extra: tensors}, training_state or None), refusing other schemas and architectures and
    files whose checksum differs from the one recorded."""
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
    needed = ["model.safetensors", *(f"{e}.safetensors" for e in extras)] + (["training_state.pt"] if training else [])
    for name in needed:
        path = folder / name
        if not path.is_file():
            raise GlmkitError(f"{path}: missing from the checkpoint")
        recorded = meta.get("files", {}).get(name)
        if recorded is not None and file_sha256(path) != recorded:
            raise GlmkitError(f"{path}: damaged (its sha256 differs from the one config.json recorded)")
    try:
        weights = load_file(str(folder / "model.safetensors"))
        loaded = {e: load_file(str(folder / f"{e}.safetensors")) for e in extras}
        state = torch.load(folder / "training_state.pt", weights_only=True) if training else None
    except Exception as e:
        raise GlmkitError(f"{folder}: unreadable checkpoint file ({type(e).__name__}: {str(e).splitlines()[0]})") from e
    for name, tensors in loaded.items():
        require_finite(tensors, folder / f"{name}.safetensors")
    return meta, weights, loaded, state


def require_finite(tensors, where: str | Path, shown=lambda name: name) -> None:
    """Refuse weights holding NaN or infinity (one pass over each tensor, once, when loaded): a model with one
    such value gives all-NaN outputs, which later commands would take for results."""
    for name, tensor in tensors.items():
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise GlmkitError(f"{where}: tensor {shown(name)} holds NaN or infinite values (a damaged file, or a "
                              f"training run that diverged)")


def load_weights(model, weights: dict[str, torch.Tensor], where: str | Path,
                 shown=lambda name: name, configuration: str = "the configuration") -> torch.nn.Module:
    """``model.load_state_dict(weights)``, or one line naming the first tensor that is missing, extra or of
    another shape than the model's configuration makes it. ``shown`` gives a tensor's name as the file has it
    (published checkpoints name them otherwise than glmkit's models).

    ``model`` may be a function that builds it: the model is then first built on the meta device (no memory)
    and compared with the weights, and only built for real when they fit, so that a configuration claiming a
    model of 12 GB is refused by its first wrong shape, not by the machine running out of memory."""
    if not isinstance(model, torch.nn.Module):
        build = model
        with torch.device("meta"):
            _check_shapes(build().state_dict(), weights, where, shown, configuration)
        model = build()
    expected = model.state_dict()
    _check_shapes(expected, weights, where, shown, configuration)
    require_finite(weights, where, shown)
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in weights.items()})
    return model


def _check_shapes(expected: dict, weights: dict, where, shown, configuration: str) -> None:
    for name, tensor in expected.items():
        if name not in weights:
            raise GlmkitError(f"{where}: no tensor {shown(name)} (not a checkpoint of this model, or an incomplete "
                              f"one)")
        if tuple(weights[name].shape) != tuple(tensor.shape):
            raise GlmkitError(f"{where}: tensor {shown(name)} has shape {tuple(weights[name].shape)}; "
                              f"{configuration} makes it {tuple(tensor.shape)}")
    extra = sorted(set(weights) - set(expected))
    if extra:
        raise GlmkitError(f"{where}: unexpected tensor {extra[0]} (not a checkpoint of this model?)")
