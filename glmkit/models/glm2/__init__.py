"""gLM2 (Cornman et al. 2024, OMG): architecture, weights, tokens, corpus, training task, context job."""

from glmkit.models.spec import ModelSpec

SPEC = ModelSpec(
    key="glm2", architecture="gLM2", package=__name__, presets=("150M", "650M", "small", "tiny"),
    # the OMG paper: 30 % masking, AdamW betas (0.9, 0.95), weight decay 0.1, cosine decay to 10 %
    recipe={"mask_fraction": 0.30, "lr": 1e-3, "weight_decay": 0.1, "betas": (0.9, 0.95), "schedule": "cosine"},
    reads_embeddings=False, items="chunks", item_name="chunks", published_keys=frozenset({"dim", "depth", "heads"}))
