"""The gLM2 task: packed rows compute what separate rows would; masks are a function of (seed, step, row); the
validation figures equal their definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import link_inputs
from glmkit.models.glm2.corpus import AA_IDS, NT_IDS, build_token_corpus, training_token_counts
from glmkit.models.glm2.task import GLM2Task
from glmkit.data.split import Split
from glmkit.models.glm2.model import GLM2, glm2_preset
from glmkit.models.glm2.tokens import MASK, PAD


@pytest.fixture(scope="module")
def task(tmp_path_factory, called_store):
    d = tmp_path_factory.mktemp("glm2task")
    link_inputs(d, called_store)
    corpus = build_token_corpus([str(d / "el.zarr")], d / "t.zarr", context=256)
    split = Split(0, 0.2)
    return GLM2Task(corpus, split, glm2_preset("tiny"), 0.3, 7, 256, {}, training_token_counts(corpus, split))


def _model(task):
    torch.manual_seed(0)
    return GLM2(task.cfg).eval()


def test_packed_rows_compute_what_separate_rows_would(task):
    rows = task.stream(False).take(3)
    assert max(len(r) for r in rows) > 1  # several chunks share a row
    batch = task._batch(rows, np.arange(3), 4, task.reader())
    model = _model(task)
    tensors = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in batch.items()}
    with torch.no_grad():
        loss_sum, count = task.loss(model, tensors)
    # naive: every chunk alone in a row of its own length, the same corrupted inputs, CE on the chosen tokens
    naive, n = 0.0, 0
    for b in range(len(rows)):
        for seg in range(1, int(batch["segments"][b].max()) + 1):
            at = batch["segments"][b] == seg
            inputs = torch.from_numpy(batch["tokens"][b][at])[None]
            with torch.no_grad():
                logits, _ = model(inputs, torch.ones_like(inputs))
            chosen = torch.from_numpy(batch["masked"][b][at])
            targets = torch.from_numpy(batch["targets"][b][at])
            naive += float(F.cross_entropy(logits[0][chosen], targets[chosen], reduction="sum"))
            n += int(chosen.sum())
    assert count == n and float(loss_sum) == pytest.approx(naive, rel=1e-5)
    assert (batch["tokens"][batch["segments"] == 0] == PAD).all()


def test_masks_depend_on_seed_step_and_global_row_only(task):
    rows = task.stream(False).take(4)
    whole = task._batch(rows, np.arange(4), 2, task.reader())
    half = task._batch(rows[1::2], np.arange(4)[1::2], 2, task.reader())  # what rank 1 of 2 builds
    assert (half["masked"] == whole["masked"][1::2]).all() and (half["tokens"] == whole["tokens"][1::2]).all()
    other_step = task._batch(rows, np.arange(4), 3, task.reader())
    assert not (other_step["masked"] == whole["masked"]).all()
    validation = task._batch(rows, np.arange(4), task.VALIDATION_STREAM, task.reader())
    assert (validation["tokens"][validation["masked"]] == MASK).all()  # validation: every chosen token a <mask>


def test_validation_figures_equal_their_definitions(task):
    model = _model(task)
    sums, tokens = {}, []
    for batch in task.validation(0, 1, 4):
        tensors = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in batch.items()}
        with torch.no_grad():
            for k, v in task.evaluate(model, tensors).items():
                sums[k] = sums.get(k, 0) + v
            logits, _ = model(tensors["tokens"], tensors["segments"])
        m = batch["masked"]
        tokens.append((logits[torch.from_numpy(m)], batch["targets"][m]))
    found = task.summarize(sums)
    logits = torch.cat([t[0] for t in tokens])
    targets = np.concatenate([t[1] for t in tokens])
    logp = torch.log_softmax(logits.double(), -1).numpy()[np.arange(len(targets)), targets]
    counts = training_token_counts(task.corpus, task.split)
    unigram_nll = []
    for name, ids in (("aa", AA_IDS), ("nt", NT_IDS)):
        mine = ids[targets]
        assert mine.sum() > 50
        assert found[f"val_{name}_perplexity"] == pytest.approx(math.exp(-logp[mine].mean()), rel=1e-5)
        accuracy = (logits.argmax(-1).numpy()[mine] == targets[mine]).mean()
        assert found[f"val_{name}_accuracy"] == pytest.approx(accuracy)
        p = (counts[ids] + 1) / (counts[ids] + 1).sum()          # frequencies within the modality, add-one
        unigram = dict(zip(np.flatnonzero(ids), p))
        expected = math.exp(-np.mean([math.log(unigram[t]) for t in targets[mine]]))
        assert found[f"val_{name}_unigram_perplexity"] == pytest.approx(expected, rel=1e-9)
        unigram_nll += [-math.log(unigram[t]) for t in targets[mine]]
    # the baseline's loss: the unigram's cross-entropy over every masked token, the same tokens as val_loss's
    assert len(unigram_nll) == len(targets)
    assert found["val_unigram_loss"] == pytest.approx(np.mean(unigram_nll), rel=1e-9)
    assert found["val_loss"] == pytest.approx(-logp.mean(), rel=1e-5)
    # a random-weight model knows nothing: near the vocabulary's 37, far above the unigram baseline
    assert found["val_aa_perplexity"] > found["val_aa_unigram_perplexity"]
