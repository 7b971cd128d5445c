"""Hugging Face model folders as transformers writes them: config.json and the weights, whole or in shards.

Shared by the ESM2 and gLM2 loaders: model.safetensors or pytorch_model.bin
(read with weights_only=True), or the shards their *.index.json lists.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from glmkit.errors import GlmkitError
from glmkit.io.files import file_sha256


def weight_files(path: Path) -> list[Path]:
    """The weight files of a folder: one safetensors or .bin file, or the shards its index lists."""
    for single, index in (("model.safetensors", "model.safetensors.index.json"),
                          ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        if (path / single).exists():
            return [path / single]
        if (path / index).exists():
            try:
                shards = sorted(set(json.loads((path / index).read_text())["weight_map"].values()))
            except (OSError, ValueError, KeyError, AttributeError) as e:
                raise GlmkitError(f"{path / index}: unreadable shard index ({type(e).__name__}: {e})") from None
            missing = [s for s in shards if not (path / s).exists()]
            if missing:
                raise GlmkitError(f"{path / index}: lists {missing[0]}, which is not in the folder")
            return [path / s for s in shards]
    raise GlmkitError(f"{path}: no model.safetensors or pytorch_model.bin (nor a sharded index of either)")


def read_weights(path: Path) -> tuple[list[Path], dict[str, torch.Tensor]]:
    """(the files read, every tensor by its name in the folder)."""
    files = weight_files(path)
    found: dict[str, torch.Tensor] = {}
    for weights in files:
        try:
            if weights.suffix == ".safetensors":
                from safetensors.torch import load_file

                part = load_file(weights)
            else:
                part = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as e:
            raise GlmkitError(f"{weights}: unreadable weights ({type(e).__name__}: {str(e).splitlines()[0]})") from e
        found.update(part)
    return files, found


def read_config(path: Path, what: str) -> dict:
    try:
        return json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        raise GlmkitError(f"{path}: no readable config.json; expected a Hugging Face {what} folder") from None


def weights_sha256(files: list[Path]) -> str:
    """One file's sha256; for shards, the sha256 of their sha256 hex digests concatenated in name order."""
    if len(files) == 1:
        return file_sha256(files[0])
    return hashlib.sha256("".join(file_sha256(f) for f in files).encode()).hexdigest()
