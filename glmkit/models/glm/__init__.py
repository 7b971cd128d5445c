"""The gLM (Hwang et al. 2024): architecture, weights, normalisation, corpus, training task, context job."""

from glmkit.models.spec import ModelSpec

SPEC = ModelSpec(
    key="glm", architecture="gLM", package=__name__, presets=("paper", "small", "tiny"),
    recipe={"mask_fraction": 0.15, "lr": 1e-4, "weight_decay": 0.01, "betas": (0.9, 0.999), "schedule": "linear"},
    reads_embeddings=True, items="subcontigs", item_name="sub-contigs", checkpoint_extras=("normalization",))
