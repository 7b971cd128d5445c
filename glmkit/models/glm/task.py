"""The gLM as a task of the training loop (glmkit/train.py): its data, masking, loss and metrics.

Two recipes:

- ``glmkit`` (default): 15 % of each sub-contig's genes masked (at least one),
  loss = mean over masked genes of MSE(closest of 4 predictions, label) +
  1e-4 x CE(likelihoods, index of the closest); AdamW with weight decay 0.01 on
  matrices, linear warm-up then linear decay, gradient clipping (norm 1) before
  the step.
- ``reference``: the recipe of the gLM's train.py, with what it did by accident
  made explicit: each gene masked independently with probability 0.15 (a
  sub-contig may have none or all masked), labels clipped to +-10, the MSE and
  CE averaged over every position of 30-gene rows (masked or not, padding
  included: unmasked positions add log 4 to the CE and nothing to the
  gradient), AdamW (transformers' defaults: no weight decay, eps 1e-6),
  constant learning rate after warm-up, and no gradient clipping (train.py
  clipped gradient values after the optimiser step, which changes nothing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from glmkit.data.stream import PackedTask
from glmkit.data.split import Split
from glmkit.models.glm.corpus import GeneReader, make_batch
from glmkit.models.glm.normalization import CLIP, Normalization
from glmkit.io.corpus import CorpusStore
from glmkit.models.glm.model import GLM, GLMConfig, flat_positions

CE_WEIGHT = 1e-4


@dataclass
class GLMRecipe:
    name: str = "glmkit"
    mask_fraction: float = 0.15


class GLMTask(PackedTask):
    architecture, unit = "gLM", "genes"
    metrics = ("val_pseudo_accuracy", "val_mean_label_loss")
    validation_sums = ("count", "loss_sum", "correct", "scored", "mean_label_loss_sum")
    # the training curves (train.plot_training_curves): the loss beside its mean-label baseline
    curves = {"loss": ("train_loss", "val_loss", "val_mean_label_loss"), "pseudo-accuracy": ("val_pseudo_accuracy",)}

    def __init__(self, corpus: CorpusStore, split: Split, norm: Normalization, cfg: GLMConfig, recipe: GLMRecipe,
                 seed: int, capacity: int, info: dict, static_shapes: bool = False):
        self.corpus, self.split, self.norm, self.cfg = corpus, split, norm, cfg
        self.recipe, self.seed, self.capacity, self.info = recipe, seed, capacity, info
        self.static_shapes = static_shapes
        self.name, self.n_items = corpus.path, corpus.n_subcontigs
        self._keys = corpus.array("contigs/key")
        self._starts, self._lengths = corpus.array("subcontigs/start"), corpus.array("subcontigs/length")
        self._item_contig = corpus.array("subcontigs/contig")

    # -- model and checkpoint -------------------------------------------------------------------------------

    def build_model(self) -> GLM:
        return GLM(self.cfg)

    def checkpoint(self):
        arrays = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in self.norm.arrays().items()}
        return self.cfg.to_dict(), {"normalization": arrays}, {**self.info,
                                                               "normalization": {"arithmetic": self.norm.arithmetic}}

    # -- data (the rest of the data path is PackedTask's) ----------------------------------------------------

    def reader(self) -> GeneReader:
        return GeneReader(self.corpus)

    def _masks(self, segments: np.ndarray, step: int, rows: np.ndarray) -> np.ndarray:
        """(B, L) bool, a function of (seed, step, global row): the same whatever the number of processes."""
        masked = np.zeros(segments.shape, dtype=bool)
        for b, row in enumerate(rows.tolist()):
            rng = np.random.default_rng([self.seed, step + 1, row])  # step -1: validation
            scores = rng.random(segments.shape[1])
            real = segments[b] > 0
            if self.recipe.name == "reference":
                masked[b] = real & (scores < self.recipe.mask_fraction)
                continue
            for seg in np.unique(segments[b][real]):
                pos = np.flatnonzero(segments[b] == seg)
                k = max(1, int(round(self.recipe.mask_fraction * len(pos))))
                masked[b, pos[np.argsort(scores[pos], kind="stable")[:k]]] = True
        return masked

    def _batch(self, rows: list[np.ndarray], global_rows: np.ndarray, step: int, reader: GeneReader) -> dict:
        starts, lengths, local = self._item_table(rows)
        features, labels, segments = make_batch(reader, starts, lengths, local, self.norm, self.capacity)
        masked = self._masks(segments, step, global_rows)
        features[masked] = -1.0
        if self.recipe.name == "reference":
            labels = np.clip(labels, -CLIP, CLIP)
            count = sum(len(r) for r in rows) * self.capacity  # every position of 30-gene rows, one per sub-contig
        else:
            count = int(masked.sum())
        # the real and the masked genes' flat positions, found here on the host: on a GPU, finding them from the
        # masks would make the host wait for the device inside the step (tests/test_train.py counts such waits)
        batch = {"features": features, "labels": labels, "segments": segments, "masked": masked, "count": count,
                 "units": int((segments > 0).sum()), "real_at": np.flatnonzero(segments.ravel() > 0),
                 "masked_at": np.flatnonzero(masked.ravel())}
        if self.static_shapes:  # the training loss over every position, weighted 1 on the masked genes, 0 elsewhere
            batch["weights"] = masked.ravel().astype(np.float32)
        return batch

    # -- loss and metrics --------------------------------------------------------------------------------------

    def _heads(self, model, batch):
        at = batch["masked_at"] if "masked_at" in batch else flat_positions(batch["masked"])   # (N,)
        _, p, lg, _ = model(batch["features"], batch["segments"], only=at,       # heads on the masked genes alone
                            real_at=batch.get("real_at"))
        y = batch["labels"].flatten(0, 1).index_select(0, at)                # (N, D), in p's order
        loss_sum, closest = closest_loss_sum(p.float(), lg.float(), y)
        if self.recipe.name == "reference":  # unmasked positions: CE of zero logits against index 0, log 4 each
            loss_sum = loss_sum + CE_WEIGHT * math.log(self.cfg.num_predictions) * (batch["count"] - len(closest))
        return loss_sum, closest, y

    def loss(self, model, batch):
        if "weights" in batch:  # --static-shapes: every tensor of the step shaped by (B, L) alone
            _, p, lg, _ = model(batch["features"], batch["segments"], every_position=True)
            loss_sum, _ = closest_loss_sum(p.flatten(0, 1).float(), lg.flatten(0, 1).float(),
                                           batch["labels"].flatten(0, 1), batch["weights"])
            if self.recipe.name == "reference":
                loss_sum = loss_sum + CE_WEIGHT * math.log(self.cfg.num_predictions) * \
                    (batch["count"] - len(batch["masked_at"]))
            return loss_sum, batch["count"]
        loss_sum, _, _ = self._heads(model, batch)
        return loss_sum, batch["count"]

    def mean_label_loss_sum(self, y: torch.Tensor, count: int) -> float:
        """The loss of the mean-label baseline on the same genes: every prediction the labels' centre (0: whitened
        PCA components are centred, orientation averages to 0), likelihoods uniform (log P per position)."""
        return float((y.float() ** 2).mean(-1).sum()) + CE_WEIGHT * math.log(self.cfg.num_predictions) * count

    def evaluate(self, model, batch) -> dict:
        loss_sum, closest, y = self._heads(model, batch)
        correct = pseudo_accuracy_counts(closest, batch["labels"], batch["segments"], batch["masked"])
        return {"count": batch["count"], "loss_sum": float(loss_sum), "correct": correct,
                "scored": int(batch["masked"].sum()), "mean_label_loss_sum": self.mean_label_loss_sum(y, batch["count"])}

    def summarize(self, sums: dict) -> dict:
        if not sums.get("scored"):
            return {}
        count = max(1.0, sums["count"])
        return {"val_loss": sums["loss_sum"] / count, "val_pseudo_accuracy": sums["correct"] / sums["scored"],
                "val_mean_label_loss": sums["mean_label_loss_sum"] / count}


def closest_loss_sum(p: torch.Tensor, lg: torch.Tensor, y: torch.Tensor,
                     weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The gLM's loss, summed over genes: MSE of the prediction closest to the label + CE_WEIGHT x CE(likelihoods,
    index of the closest). p (N, P, D) predictions, lg (N, P) likelihood logits, y (N, D) labels, weights (N,) per
    gene (default 1); returns the sum and the closest predictions (N, D)."""
    mse = ((p - y[:, None, :]) ** 2).mean(-1)                                        # (N, P)
    best = mse.argmin(-1)                                                            # (N,)
    per_gene = mse.gather(1, best[:, None]).squeeze(1) + CE_WEIGHT * F.cross_entropy(lg, best, reduction="none")
    loss_sum = per_gene.sum() if weights is None else (per_gene * weights).sum()
    return loss_sum, p[torch.arange(len(best), device=p.device), best]


def pseudo_accuracy_counts(closest: torch.Tensor, labels: torch.Tensor, segments: torch.Tensor,
                           masked: torch.Tensor) -> int:
    """Masked genes whose closest prediction lies at least as near its own label as any other gene's label of its
    sub-contig (Hwang et al.'s pseudo-accuracy). closest (N, D) in the order of ``masked.nonzero()``."""
    b, pos = masked.nonzero(as_tuple=True)
    if not len(b):
        return 0
    row_labels = labels[b].float()                                                 # (N, L, D)
    distance = ((row_labels - closest.float()[:, None, :]) ** 2).sum(-1)          # (N, L)
    same = segments[b] == segments[b, pos][:, None]                                 # (N, L) genes of its sub-contig
    distance = distance.masked_fill(~same, float("inf"))
    own = distance[torch.arange(len(b)), pos]
    return int((own <= distance.min(-1).values).sum())


# -- the family's training hooks (glmkit/models/spec.py) ----------------------------------------------------------

def check_options(options) -> None:
    """Every pretrain option means something for the gLM."""


def model_config(options, **shapes) -> GLMConfig:
    from glmkit.models.glm.model import preset

    return preset(options.preset, num_layers=options.num_layers, hidden_size=options.hidden_size,
                  num_heads=options.num_heads, dropout=options.dropout, **shapes)


def make_task(corpus, split, options, meta, extras, checkpoint, embedding_path, rank, world, init=None):
    """The gLM task: its normalisation fitted on the training proteins, or the checkpoint's it resumes, or the
    model's it starts from (``init``, a LoadedGLM: pretrain --init), whose embeddings the corpus must match."""
    from dataclasses import asdict, replace

    from glmkit.errors import GlmkitError
    from glmkit.models.glm.normalization import Normalization, fit_normalization
    from glmkit.train import shared

    dim = corpus.embedding.shape[1]
    if meta is not None:
        norm = Normalization.from_checkpoint(meta, extras["normalization"], checkpoint)
        cfg = GLMConfig.from_dict(meta.get("config"), checkpoint / "config.json")
    elif init is not None:
        norm, cfg = init.norm, init.cfg if options.dropout is None else replace(init.cfg, dropout=options.dropout)
        if cfg.input_dim != dim + 1:
            raise GlmkitError(f"{init.folder}: takes {cfg.input_dim - 1}-dimensional embeddings; the corpus has "
                              f"{dim} (embed with the model it was trained on)")
        if options.subcontig_genes > cfg.max_position_embeddings:
            raise GlmkitError(f"--subcontig-genes {options.subcontig_genes}: the model of {init.folder} has "
                              f"{cfg.max_position_embeddings} positions")
    else:
        norm = shared(lambda: fit_normalization(corpus, embedding_path, split), rank, world)
        cfg = model_config(options, input_dim=dim + 1, label_dim=norm.label_components.shape[1] + 1,
                           max_position_embeddings=max(512, options.subcontig_genes))
    info = {"embedding_model": corpus.attrs["embedding_model"], "options": asdict(options),
            "corpus": corpus.attrs["parameters"]}
    task = GLMTask(corpus, split, norm, cfg, GLMRecipe(options.recipe, options.mask_fraction), options.seed,
                   options.subcontig_genes, info, options.static_shapes)
    return task, (f"gLM {cfg.num_layers} layers, hidden {cfg.hidden_size}, {cfg.num_heads} heads; recipe "
                  f"{options.recipe}")
