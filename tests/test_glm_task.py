"""glmkit.models.glm.task: masking, the loss of each recipe and the pseudo-accuracy, against naive versions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from glmkit.models.glm.task import CE_WEIGHT, GLMRecipe, GLMTask, closest_loss_sum, pseudo_accuracy_counts
from glmkit.models.glm.model import GLM, preset


def task(recipe="glmkit", seed=0, capacity=30):
    t = GLMTask.__new__(GLMTask)
    t.recipe, t.seed, t.capacity = GLMRecipe(recipe, 0.15), seed, capacity
    t.cfg = preset("tiny", input_dim=9, label_dim=5)
    return t


def test_glmkit_masks_fifteen_percent_of_each_subcontig_by_seed_step_and_row():
    segments = np.array([[1] * 30, [1] * 15 + [2] * 15, [1] * 20 + [0] * 10])
    t = task()
    m = t._masks(segments, step=5, rows=np.array([10, 11, 12]))
    assert m[0].sum() == round(0.15 * 30) and m[1, :15].sum() == 2 and m[1, 15:].sum() == 2
    assert m[2, :20].sum() == 3 and not m[2, 20:].any()
    # a row's mask depends on (seed, step, row) only: not on its neighbours, not on how rows were shared out
    np.testing.assert_array_equal(t._masks(segments[1:2], 5, np.array([11]))[0], m[1])
    assert not np.array_equal(t._masks(segments, 6, np.array([10, 11, 12])), m)
    assert not np.array_equal(task(seed=1)._masks(segments, 5, np.array([10, 11, 12])), m)


def test_reference_masks_each_gene_independently():
    segments = np.ones((2000, 30), dtype=np.int64)
    segments[:, 25:] = 0
    m = task("reference")._masks(segments, 0, np.arange(2000))
    assert not m[:, 25:].any()
    assert abs(m[:, :25].mean() - 0.15) < 0.01
    per_row = m.sum(1)
    assert (per_row == 0).any() and per_row.max() > 8  # none, or many: Bernoulli, not a fixed share


def _batch(rng, B=3, L=30, recipe="glmkit"):
    segments = np.zeros((B, L), np.int64)
    segments[0, :30], segments[1, :15], segments[1, 15:27], segments[2, :20] = 1, 1, 2, 1
    masked = task(recipe)._masks(segments, 0, np.arange(B))
    count = int(masked.sum()) if recipe == "glmkit" else 4 * L  # 4 sub-contigs, each a 30-gene row for the reference
    return {"features": torch.randn(B, L, 9, generator=rng), "labels": torch.randn(B, L, 5, generator=rng),
            "segments": torch.from_numpy(segments), "masked": torch.from_numpy(masked), "count": count}


@pytest.mark.parametrize("recipe", ["glmkit", "reference"])
def test_loss_sum_equals_a_gene_by_gene_computation(recipe):
    rng = torch.Generator().manual_seed(0)
    t = task(recipe)
    torch.manual_seed(0)
    model = GLM(t.cfg).eval()
    batch = _batch(rng, recipe=recipe)
    loss_sum, count = t.loss(model, batch)
    with torch.no_grad():
        _, predictions, logits, _ = model(batch["features"], batch["segments"])
    expected, masked_genes = 0.0, 0
    for b, l in zip(*np.nonzero(batch["masked"].numpy())):
        mse = [float(((predictions[b, l, p] - batch["labels"][b, l]) ** 2).mean()) for p in range(4)]
        best = int(np.argmin(mse))
        ce = -float(torch.log_softmax(logits[b, l], -1)[best])
        expected += mse[best] + CE_WEIGHT * ce
        masked_genes += 1
    if recipe == "reference":  # every other position of the 30-gene rows: CE of zero logits, log 4
        expected += CE_WEIGHT * math.log(4) * (batch["count"] - masked_genes)
    assert count == batch["count"]
    assert loss_sum.item() == pytest.approx(expected, rel=1e-5)


def test_pseudo_accuracy_equals_its_definition():
    rng = np.random.default_rng(0)
    B, L, D = 6, 30, 4
    labels = torch.from_numpy(rng.normal(size=(B, L, D)).astype(np.float32))
    segments = torch.zeros(B, L, dtype=torch.long)
    segments[:, :15], segments[:, 15:28] = 1, 2
    masked = torch.from_numpy(rng.random((B, L)) < 0.3) & (segments > 0)
    b, l = masked.nonzero(as_tuple=True)
    closest = labels[b, l] + torch.from_numpy(rng.normal(scale=0.8, size=(len(b), D)).astype(np.float32))
    naive = 0
    for k in range(len(b)):
        same = [j for j in range(L) if segments[b[k], j] == segments[b[k], l[k]]]
        d = {j: float(((labels[b[k], j] - closest[k]) ** 2).sum()) for j in same}
        naive += d[int(l[k])] <= min(d.values())
    assert 0 < naive < len(b)
    assert pseudo_accuracy_counts(closest, labels, segments, masked) == naive


def test_loss_is_mse_of_closest_plus_small_ce():
    g = torch.Generator().manual_seed(2)
    preds, logits, labels = torch.randn(1, 3, 4, 5, generator=g), torch.randn(1, 3, 4, generator=g), torch.randn(1, 3, 5, generator=g)
    masked = torch.tensor([[True, False, True]])
    loss_sum, closest = closest_loss_sum(preds[masked], logits[masked], labels[masked])
    loss = loss_sum / int(masked.sum())
    expected, ce = 0.0, 0.0
    for j in (0, 2):
        mse = [((preds[0, j, k] - labels[0, j]) ** 2).mean().item() for k in range(4)]
        best = min(range(4), key=mse.__getitem__)
        expected += mse[best] / 2
        ce += -torch.log_softmax(logits[0, j], -1)[best].item() / 2
    assert loss.item() == pytest.approx(expected + 1e-4 * ce, rel=1e-6)
    assert closest.shape == (2, 5)


@pytest.mark.parametrize("recipe", ["glmkit", "reference"])
def test_a_model_predicting_the_mean_label_scores_exactly_the_mean_label_baseline(recipe):
    """val_mean_label_loss is the loss of predicting every label's centre (0) with uniform likelihoods: a model
    whose heads output exactly that (zero weights, zero biases) gets it as its own loss, in both recipes."""
    rng = torch.Generator().manual_seed(2)
    t = task(recipe)
    torch.manual_seed(0)
    model = GLM(t.cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(("predict.", "likelihood.")):
                p.zero_()
    batch = _batch(rng, recipe=recipe)
    with torch.no_grad():
        sums = t.evaluate(model, batch)
    assert sums["loss_sum"] == pytest.approx(sums["mean_label_loss_sum"], rel=1e-6)
    found = t.summarize(sums)
    assert found["val_loss"] == pytest.approx(found["val_mean_label_loss"], rel=1e-6)
    y = batch["labels"][batch["masked"]]   # the formula written out: mean(y^2) per masked gene, log 4 per position
    expected = float((y ** 2).mean(-1).sum()) + CE_WEIGHT * math.log(4) * batch["count"]
    assert sums["mean_label_loss_sum"] == pytest.approx(expected, rel=1e-6)
    with torch.no_grad():   # a trained-looking model is not held to it
        other = t.evaluate(GLM(t.cfg).eval(), batch)
    assert other["loss_sum"] != pytest.approx(other["mean_label_loss_sum"], rel=1e-3)
