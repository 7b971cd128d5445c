"""ESM2's weights: fair-esm .pt files, Hugging Face EsmModel / EsmForMaskedLM folders and fair-esm hub names,
loaded into glmkit's ESM2 (model.py) with every shape checked before anything is allocated."""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from glmkit.errors import GlmkitError
from glmkit.io.files import file_sha256
from glmkit.models.esm2.model import ESM2, ESM2Config, LMHead

HUB_MODELS = {  # fair-esm names -> (layers, dim, heads)
    "esm2_t6_8M_UR50D": (6, 320, 20),
    "esm2_t12_35M_UR50D": (12, 480, 20),
    "esm2_t30_150M_UR50D": (30, 640, 20),
    "esm2_t33_650M_UR50D": (33, 1280, 20),
    "esm2_t36_3B_UR50D": (36, 2560, 40),
    "esm2_t48_15B_UR50D": (48, 5120, 40),
}
HUB_URL = "https://dl.fbaipublicfiles.com/fair-esm/models/{name}.pt"


@dataclass
class LoadedModel:
    model: ESM2
    name: str      # hub name, file stem or folder name
    source: str    # where the weights came from
    sha256: str    # checksum of the weights file (shards: sha256 of their checksums, in name order)


def _assign(cfg: ESM2Config, state: dict[str, torch.Tensor], source: str) -> ESM2:
    """The ESM2 of ``cfg`` with ``state``'s weights (others, e.g. a contact head, are not used). Shapes are
    compared on the meta device first: a configuration claiming a huge model is refused, not allocated."""
    from glmkit.io.checkpoint import require_finite

    def build() -> ESM2:
        model = ESM2(cfg)
        if any(k.startswith("lm_head.") for k in state):
            model.lm_head = LMHead(cfg)
        return model

    with torch.device("meta"):
        expected = build().state_dict()
    missing = [k for k in expected if k not in state]
    if missing:
        raise GlmkitError(f"{source}: checkpoint lacks {len(missing)} ESM2 weights (e.g. {missing[0]}); not an ESM2?")
    for name, tensor in expected.items():
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise GlmkitError(f"{source}: tensor {name} has shape {tuple(state[name].shape)}; the checkpoint's "
                              f"configuration makes it {tuple(tensor.shape)}")
    require_finite({k: state[k] for k in expected}, source)
    # the checkpoint's tensors become the model's (float32, as the parameters would be): no randomly initialised
    # copy of the model beside them, which had doubled the loading peak (650M: 5.9 GB)
    with torch.device("meta"):
        model = build()
    model.load_state_dict({k: state[k].float() for k in expected}, assign=True)
    return model.eval()


# Parameter names of the two published layouts, as (ours -> theirs): top level, per layer, and the separate
# q/k/v projections that we concatenate into one qkv weight.
FAIR_ESM_NAMES = {
    "top": {"embed_tokens": "embed_tokens", "final_norm": "emb_layer_norm_after"},
    "layer": "layers.{i}.",
    "per_layer": {"attn_norm": "self_attn_layer_norm", "out": "self_attn.out_proj", "fc1": "fc1", "fc2": "fc2",
                  "ffn_norm": "final_layer_norm"},
    "qkv": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "strip": r"^(encoder\.sentence_encoder\.|encoder\.)",
    "lm_head": {"dense.weight": "dense.weight", "dense.bias": "dense.bias", "layer_norm.weight": "layer_norm.weight",
                "layer_norm.bias": "layer_norm.bias", "bias": "bias"},
}
HF_NAMES = {
    "top": {"embed_tokens": "embeddings.word_embeddings", "final_norm": "encoder.emb_layer_norm_after"},
    "layer": "encoder.layer.{i}.",
    "per_layer": {"attn_norm": "attention.LayerNorm", "out": "attention.output.dense", "fc1": "intermediate.dense",
                  "fc2": "output.dense", "ffn_norm": "LayerNorm"},
    "qkv": ("attention.self.query", "attention.self.key", "attention.self.value"),
    "strip": r"^esm\.",
    "lm_head": {"dense.weight": "dense.weight", "dense.bias": "dense.bias", "layer_norm.weight": "layer_norm.weight",
                "layer_norm.bias": "layer_norm.bias", "bias": "bias"},
}


def remap_state(cfg: ESM2Config, theirs: dict[str, torch.Tensor], names: dict) -> dict[str, torch.Tensor]:
    """A published state dict (fair-esm or Hugging Face names) -> ours."""
    theirs = {re.sub(names["strip"], "", k): v for k, v in theirs.items()}
    state = {}
    for ours, name in names["top"].items():
        for kind in (("weight",) if ours == "embed_tokens" else ("weight", "bias")):
            state[f"{ours}.{kind}"] = theirs[f"{name}.{kind}"]
    for i in range(cfg.num_layers):
        p, q = f"layers.{i}.", names["layer"].format(i=i)
        for kind in ("weight", "bias"):
            for ours, name in names["per_layer"].items():
                state[f"{p}{ours}.{kind}"] = theirs[f"{q}{name}.{kind}"]
            state[f"{p}qkv.{kind}"] = torch.cat([theirs[f"{q}{name}.{kind}"] for name in names["qkv"]])
    head = {f"lm_head.{ours}": theirs.get(f"lm_head.{name}") for ours, name in names["lm_head"].items()}
    if all(v is not None for v in head.values()):  # embeddings-only checkpoints have none
        state.update(head)
    return state


def _check_config(cfg: ESM2Config, where) -> None:
    values = (cfg.num_layers, cfg.embed_dim, cfg.attention_heads)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values) or \
            cfg.embed_dim % cfg.attention_heads:
        raise GlmkitError(f"{where}: {cfg.num_layers} layers, dim {cfg.embed_dim}, {cfg.attention_heads} heads: not "
                          f"an ESM2's shape (positive, dim a multiple of heads)")


def load_fair_esm_file(path: Path, name: str | None = None) -> LoadedModel:
    """A fair-esm checkpoint ``{"cfg": {"model": Namespace}, "model": state_dict}``, loaded with weights_only.

    torch >= 2.6 refuses the argparse.Namespace in these files under its safe
    default; we allow-list exactly that class instead of turning safety off.
    """
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            try:  # memory-mapped: the file's pages, not a second in-memory copy beside the model's (2.6 GB for t33)
                data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as e:
                if "mmap" not in str(e):   # a file in torch's legacy (pre-1.6, not zip) format cannot be mapped
                    raise
                data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise GlmkitError(f"{path}: not a readable fair-esm checkpoint ({type(e).__name__}: {str(e).splitlines()[0]})") from e
    try:
        args = data["cfg"]["model"]
        cfg = ESM2Config(num_layers=args.encoder_layers, embed_dim=args.encoder_embed_dim,
                         attention_heads=args.encoder_attention_heads, token_dropout=args.token_dropout)
        state = remap_state(cfg, data["model"], FAIR_ESM_NAMES)
    except (KeyError, AttributeError, TypeError) as e:
        raise GlmkitError(f"{path}: not an ESM2 checkpoint in fair-esm's layout (missing {e})") from e
    except RuntimeError as e:   # q, k and v projections that cannot be joined
        raise GlmkitError(f"{path}: tensors of impossible shapes ({str(e).splitlines()[0]})") from None
    _check_config(cfg, path)
    model = _assign(cfg, state, str(path))
    return LoadedModel(model, name or path.stem, str(path.resolve()), file_sha256(path))


def _hf_name(key: str) -> str:
    """Parameter names as transformers 4 writes them: transformers 5 saves LayerNorms as gamma/beta."""
    return re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", key))


def load_hf_folder(path: Path) -> LoadedModel:
    """A Hugging Face EsmModel / EsmForMaskedLM folder as transformers 4.x or 5.x saves it: config.json plus
    model.safetensors or pytorch_model.bin, whole or in shards."""
    from glmkit.models.hf_folder import read_config

    config = read_config(path, "ESM model")
    if config.get("model_type") != "esm" or config.get("position_embedding_type", "rotary") != "rotary":
        raise GlmkitError(f"{path}: config.json is not an ESM2 model (model_type={config.get('model_type')!r})")
    try:
        cfg = ESM2Config(num_layers=config["num_hidden_layers"], embed_dim=config["hidden_size"],
                         attention_heads=config["num_attention_heads"],
                         token_dropout=config.get("token_dropout", False),
                         layer_norm_eps=config.get("layer_norm_eps", 1e-12))
    except KeyError as e:
        raise GlmkitError(f"{path / 'config.json'}: no {e.args[0]}: not an ESM2 configuration") from None
    _check_config(cfg, path / "config.json")
    if config.get("intermediate_size", 4 * cfg.embed_dim) != 4 * cfg.embed_dim or config.get("emb_layer_norm_before"):
        raise GlmkitError(f"{path}: unsupported ESM variant (intermediate_size or emb_layer_norm_before differ from ESM2)")
    from glmkit.models.hf_folder import read_weights

    files, weights = read_weights(path)
    hf = {_hf_name(k): v for k, v in weights.items()}
    try:
        state = remap_state(cfg, hf, HF_NAMES)
    except KeyError as e:
        raise GlmkitError(f"{path}: missing ESM2 weight {e.args[0]}") from None
    except RuntimeError as e:   # q, k and v projections that cannot be joined
        raise GlmkitError(f"{path}: tensors of impossible shapes ({str(e).splitlines()[0]})") from None
    from glmkit.models.hf_folder import weights_sha256

    digest = weights_sha256(files)
    return LoadedModel(_assign(cfg, state, str(path)), path.name, str(path.resolve()), digest)


def load_hub(name: str) -> LoadedModel:
    """A fair-esm model by name: from torch's hub cache, downloading it there when missing (needs internet)."""
    cache = Path(torch.hub.get_dir()) / "checkpoints" / f"{name}.pt"
    if not cache.exists():
        cache.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(HUB_URL.format(name=name), str(cache), progress=False)
        except Exception as e:
            raise GlmkitError(f"could not download {name} ({type(e).__name__}); without internet, copy {name}.pt "
                              f"to {cache} or pass --model /path/to/{name}.pt") from e
    return load_fair_esm_file(cache, name)


def load_esm2(spec: str) -> LoadedModel:
    """``spec``: a fair-esm model name, a fair-esm ``.pt`` file, or a Hugging Face folder."""
    path = Path(spec)
    if path.is_dir():
        return load_hf_folder(path)
    if path.is_file():
        return load_fair_esm_file(path)
    if spec in HUB_MODELS:
        return load_hub(spec)
    if os.sep in spec or spec.endswith(".pt"):
        raise GlmkitError(f"{spec}: no such model file or folder")
    raise GlmkitError(f"unknown model '{spec}': use a fair-esm name ({', '.join(HUB_MODELS)}), "
                      f"a fair-esm .pt file or a Hugging Face folder")


def write_random_esm2(path: Path, layers: int, dim: int, heads: int, seed: int = 0, spread: float | None = None):
    """A random-weight ESM2 made by fair-esm's own ESM2 class and saved in the layout of fair-esm's .pt files (the
    demo's, and the tests'); ``spread``: weights drawn N(0, spread) (vectors N(0, spread / 2)) instead of fair-esm's
    initialisation, so that every layer matters. Returns fair-esm's model (eval mode) and alphabet."""
    import esm

    torch.manual_seed(seed)
    alphabet = esm.data.Alphabet.from_architecture("ESM-1b")
    model = esm.model.esm2.ESM2(num_layers=layers, embed_dim=dim, attention_heads=heads, alphabet=alphabet,
                                token_dropout=True)
    if spread is not None:
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0, spread if p.dim() > 1 else spread / 2)
    args = argparse.Namespace(encoder_layers=layers, encoder_embed_dim=dim, encoder_attention_heads=heads,
                              token_dropout=True)
    torch.save({"cfg": {"model": args},
                "model": {f"encoder.sentence_encoder.{k}": v for k, v in model.state_dict().items()}}, path)
    return model.eval(), alphabet
