"""glmkit pretrain: training runs, exact resume, DDP over gloo, normalisation, bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
import zarr

from conftest import assert_one_line_error, run
from glmkit.errors import GlmkitError
from glmkit.glm_data import Normalization, pack, windows
from glmkit.models import glm as glm_module
from glmkit.pretrain import PretrainOptions, masks_for, pseudo_accuracy, run_pretrain


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, esm_checkpoint):
    """Genes of the 12 test contigs, and their embeddings from the random test ESM2."""
    from conftest import TEST_DATA

    d = tmp_path_factory.mktemp("corpus")
    assert run("call", TEST_DATA / "multi_contigs.fna", "-o", d / "el.zarr", "-q").exit_code == 0
    assert run("embed", d / "el.zarr", "-o", d / "emb.zarr", "-m", esm_checkpoint[0], "-q").exit_code == 0
    return d / "el.zarr", d / "emb.zarr"


@pytest.fixture
def tiny_with_dropout(monkeypatch):
    monkeypatch.setitem(glm_module.PRESETS, "tiny", replace(glm_module.PRESETS["tiny"], dropout=0.1))


def options(**kw):
    base = dict(preset="tiny", max_steps=6, batch_size=4, warmup_steps=2, val_every=3, checkpoint_every=3,
                log_every=1, lr=1e-3, val_fraction=0.2, threads=1)
    return PretrainOptions(**{**base, **kw})


def test_trains_and_writes_checkpoint_log_and_curves(tmp_path, corpus):
    result = run_pretrain([str(corpus[0])], str(corpus[1]), str(tmp_path / "m"), options(max_steps=12, lr=3e-3))
    assert result["step"] == 12 and 0 <= result["val_pseudo_accuracy"] <= 1
    out = tmp_path / "m"
    assert {p.name for p in out.iterdir()} == {"checkpoint", "log.tsv", "curves.png"}
    assert {p.name for p in (out / "checkpoint").iterdir()} == {"config.json", "model.safetensors",
                                                                "normalization.safetensors", "training_state.pt"}
    meta = json.loads((out / "checkpoint" / "config.json").read_text())
    assert meta["architecture"] == "gLM" and meta["config"]["input_dim"] == 65 and meta["step"] == 12
    assert meta["embedding_model"]["name"] == "esm2_t2_test"
    rows = [line.split("\t") for line in (out / "log.tsv").read_text().splitlines()]
    assert rows[0] == ["step", "epoch", "lr", "train_loss", "val_loss", "val_pseudo_accuracy", "genes_per_s"]
    losses = [float(r[3]) for r in rows[1:]]
    assert len(losses) == 12 and np.mean(losses[-3:]) < np.mean(losses[:3])  # it learns something
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_checkpoint_files_follow_the_umask(tmp_path, corpus, umask):
    """A lab's shared model folder: every checkpoint file gets the mode the umask gives (safetensors writes 0600)."""
    old = os.umask(umask)
    try:
        run_pretrain([str(corpus[0])], str(corpus[1]), str(tmp_path / "m"), options(max_steps=1))
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "m").rglob("*") if p.is_file()]
    assert len(files) >= 6
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in files} == {p.name: oct(0o666 & ~umask) for p in files}


def test_resume_continues_exactly(tmp_path, corpus, tiny_with_dropout, monkeypatch):
    els, emb = [str(corpus[0])], str(corpus[1])
    run_pretrain(els, emb, str(tmp_path / "straight"), options())
    import glmkit.pretrain as pretrain_module

    original = pretrain_module.Trainer.save

    def save_then_die(self):
        original(self)
        if self.step == 3:
            raise KeyboardInterrupt("killed after the step-3 checkpoint")

    monkeypatch.setattr(pretrain_module.Trainer, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_pretrain(els, emb, str(tmp_path / "resumed"), options())
    monkeypatch.undo()
    run_pretrain(els, emb, str(tmp_path / "resumed"), options(), resume=True)
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "straight" / "checkpoint" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "checkpoint" / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=0, rtol=0)
    # the log after resume equals the uninterrupted run's (all but the throughput column), validation included
    logs = [[line.split("\t")[:-1] for line in (tmp_path / d / "log.tsv").read_text().splitlines()]
            for d in ("straight", "resumed")]
    assert logs[0] == logs[1] and len(logs[0]) == 7
    assert [r[4] for r in logs[0][1:]] == ["", ""] + [logs[0][3][4]] * 3 + [logs[0][6][4]]  # no val before step 3
    assert logs[0][3][4] != ""


@pytest.mark.skipif(shutil.which("torchrun") is None and not os.path.exists(os.path.join(os.path.dirname(sys.executable), "torchrun")),
                    reason="torchrun not installed")
def test_two_processes_over_gloo(tmp_path, corpus):
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "glmkit", "pretrain", str(corpus[0]),
           "-e", str(corpus[1]), "-o", str(tmp_path / "ddp"), "--preset", "tiny", "--max-steps", "4",
           "--batch-size", "4", "--warmup-steps", "1", "--val-every", "2", "--checkpoint-every", "2",
           "--log-every", "1", "--device", "cpu", "-t", "1", "--val-fraction", "0.2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    meta = json.loads((tmp_path / "ddp" / "checkpoint" / "config.json").read_text())
    assert meta["step"] == 4 and "2 process(es)" in result.stderr
    rows = (tmp_path / "ddp" / "log.tsv").read_text().splitlines()
    assert len(rows) == 5 and all(np.isfinite(float(r.split("\t")[3])) for r in rows[1:])


def test_normalization_whitens_labels():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 20)) @ rng.normal(size=(20, 20)) + 5
    norm = Normalization.fit(x.astype(np.float32), components=8)
    z = norm.standardize(x.astype(np.float32))
    assert np.abs(z.mean(0)).max() < 1e-4 and np.abs(z.std(0) - 1).max() < 1e-3
    labels = norm.labels(z)
    assert labels.shape == (400, 8)
    np.testing.assert_allclose(np.cov(labels.T), np.eye(8), atol=1e-3)  # whitened: identity covariance
    big = norm.standardize(np.full((1, 20), 1e9, dtype=np.float32))
    assert big.max() == 10.0  # clipped to +-10


def test_masks_windows_and_packing():
    segments = np.array([[1] * 30 + [0] * 2, [1] * 15 + [2] * 17])
    m = masks_for(segments, 0.15, seed=0, step=5, stream=0)
    assert m[0].sum() == round(0.15 * 30) and m[1, :15].sum() == 2 and m[1, 15:].sum() == round(0.15 * 17)
    assert not m[0, 30:].any()
    np.testing.assert_array_equal(m, masks_for(segments, 0.15, 0, 5, 0))
    assert not np.array_equal(m, masks_for(segments, 0.15, 0, 6, 0))
    assert windows(70, 30, 15) == [(0, 30), (30, 60)] and windows(75, 30, 15) == [(0, 30), (30, 60), (60, 75)]
    assert windows(70, 30, 15, overlap=True) == [(0, 30), (15, 45), (30, 60), (40, 70)]
    rows = pack([30, 15, 15, 20, 10, 29], 30)
    assert sorted(sum(rows, [])) == list(range(6)) and all(sum([30, 15, 15, 20, 10, 29][i] for i in r) <= 30 for r in rows)


def test_pseudo_accuracy_definition():
    labels = {0: np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])}
    closest = np.array([[0.1, 0.0], [0.0, 0.8]])              # nearest its own label / nearer another gene's
    own = np.array([[0.0, 0.0], [1.0, 0.0]])
    assert pseudo_accuracy(closest, own, [0, 0], labels) == (1, 2)


# -- bad input ----------------------------------------------------------------------------------------------

def test_nan_embeddings_are_refused_naming_genes(tmp_path, corpus):
    shutil.copytree(corpus[1], tmp_path / "nan.zarr")
    g = zarr.open_group(str(tmp_path / "nan.zarr"), mode="r+")
    e = g["embedding"][:]
    e[5, 3] = np.nan
    g["embedding"][:] = e
    with pytest.raises(GlmkitError, match=r"NaN or infinite embeddings for 1 proteins \(genes contig_"):
        run_pretrain([str(corpus[0])], str(tmp_path / "nan.zarr"), str(tmp_path / "m"), options())


def test_loss_turning_nan_stops_and_keeps_last_checkpoint(tmp_path, corpus, monkeypatch):

    real = glm_module.glm_loss
    calls = []

    def poisoned(*args, **kwargs):
        loss, closest = real(*args, **kwargs)
        calls.append(1)
        return (loss * float("nan"), closest) if len(calls) > 5 else (loss, closest)

    monkeypatch.setattr(glm_module, "glm_loss", poisoned)
    with pytest.raises(GlmkitError, match=r"loss became nan at step \d+; the last good checkpoint \(step 3\)"):
        run_pretrain([str(corpus[0])], str(corpus[1]), str(tmp_path / "m"), options(val_every=100))
    assert json.loads((tmp_path / "m" / "checkpoint" / "config.json").read_text())["step"] == 3


def test_resume_refuses_other_embeddings_and_architectures(tmp_path, corpus, esm_checkpoint):
    run_pretrain([str(corpus[0])], str(corpus[1]), str(tmp_path / "m"), options(max_steps=3))
    other = tmp_path / "same_name" / "esm2_t2_test.pt"  # same name, other weights: the checksum tells
    other.parent.mkdir()
    from conftest import make_fair_esm_checkpoint

    make_fair_esm_checkpoint(other, seed=1)
    assert run("embed", corpus[0], "-o", tmp_path / "emb2.zarr", "-m", other, "-q").exit_code == 0
    with pytest.raises(GlmkitError, match="trained on embeddings from esm2_t2_test.*sha256"):
        run_pretrain([str(corpus[0])], str(tmp_path / "emb2.zarr"), str(tmp_path / "m"), options(), resume=True)
    cfg = tmp_path / "m" / "checkpoint" / "config.json"
    cfg.write_text(cfg.read_text().replace('"architecture": "gLM"', '"architecture": "gLM2"'))
    with pytest.raises(GlmkitError, match="a gLM2 checkpoint; expected gLM"):
        run_pretrain([str(corpus[0])], str(corpus[1]), str(tmp_path / "m"), options(), resume=True)


def test_cli_errors(tmp_path, corpus):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "x").write_text("")
    assert_one_line_error(run("pretrain", corpus[0], "-e", corpus[1], "-o", tmp_path / "m", "--preset", "tiny",
                              "-q"), "output exists", "--resume")
    assert_one_line_error(run("pretrain", corpus[0], "-e", corpus[1], "-o", tmp_path / "n", "--preset", "tiny",
                              "--resume", "-q"), "nothing to resume")
    assert_one_line_error(run("pretrain", corpus[0], "-e", corpus[0], "-o", tmp_path / "k", "-q"),
                          "expected an embedding store")


def test_no_subcontigs_left(tmp_path, corpus):
    from conftest import build_store, cds, igs

    build_store(tmp_path / "short.zarr", [("c", 5000, [cds(), igs(), cds(), igs(), cds()])])
    with pytest.raises(GlmkitError, match="no sub-contigs of at least 15 genes"):
        run_pretrain([str(tmp_path / "short.zarr")], str(corpus[1]), str(tmp_path / "m"), options())
    assert not (tmp_path / "m").exists()
