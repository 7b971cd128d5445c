"""glmkit pretrain: outputs, exact resume, refusals of --resume, the corpus store's reuse, recipes, bad input."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
import zarr

from conftest import assert_one_line_error, die_after_checkpoint, link_inputs, run
from glmkit.errors import GlmkitError, GlmkitUsageError
from glmkit.commands.pretrain import PretrainOptions, loop_options, run_pretrain, warmup_steps


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, called_store, embedded_store):
    """Genes of the 12 test contigs, and their embeddings from the random test ESM2."""

    d = tmp_path_factory.mktemp("corpus")
    link_inputs(d, called_store, embedded_store)
    return d / "el.zarr", d / "emb.zarr"


def options(**kw):
    base = dict(preset="tiny", max_steps=6, batch_size=4, warmup_steps=2, val_every=3, checkpoint_every=3,
                log_every=1, lr=1e-3, val_fraction=0.2, threads=1, subcontig_genes=15, min_subcontig_genes=8)
    return PretrainOptions(**{**base, **kw})


def test_trains_and_writes_checkpoint_log_and_curves(tmp_path, corpus):
    result = run_pretrain([str(corpus[0])], str(corpus[1]), str(tmp_path / "m"), options(max_steps=12, lr=3e-3))
    assert result["step"] == 12 and 0 <= result["val_pseudo_accuracy"] <= 1
    out = tmp_path / "m"
    assert {p.name for p in out.iterdir()} == {"checkpoint", "corpus.zarr", "log.tsv", "curves.png"}
    assert {p.name for p in (out / "checkpoint").iterdir()} == {"config.json", "model.safetensors",
                                                                "normalization.safetensors", "training_state.pt"}
    meta = json.loads((out / "checkpoint" / "config.json").read_text())
    assert meta["architecture"] == "gLM" and meta["config"]["input_dim"] == 65 and meta["step"] == 12
    assert meta["embedding_model"]["name"] == "esm2_t2_test" and meta["world_size"] == 1
    rows = [line.split("\t") for line in (out / "log.tsv").read_text().splitlines()]
    assert rows[0] == ["step", "epoch", "lr", "train_loss", "val_loss", "val_pseudo_accuracy",
                       "val_mean_label_loss", "seconds", "genes_per_s", "data_wait"]
    losses = [float(r[3]) for r in rows[1:]]
    assert len(losses) == 12 and np.mean(losses[-3:]) < np.mean(losses[:3])  # it learns something
    assert all(0 <= float(r[9]) <= 1 for r in rows[1:])
    seconds = [float(r[7]) for r in rows[1:]]
    baseline = [float(r[6]) for r in rows[1:] if r[6]]   # validated rows: the mean-label loss, about 1 (whitened)
    assert baseline and all(0.5 < b < 2 for b in baseline)
    assert seconds == sorted(seconds) and seconds[0] > 0
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert run("validate", out / "corpus.zarr", "-q").exit_code == 0


def test_bf16_on_cpu_tracks_fp32(tmp_path, corpus):
    """--precision bf16 on CPU trains under autocast (losses differ from fp32's: it is not silently fp32) and
    tracks fp32 (the stated tolerance of docs/benchmarks.md: within the loss's own step-to-step change);
    the checkpoint keeps fp32 weights."""
    def losses(precision: str) -> np.ndarray:
        out = tmp_path / precision
        run_pretrain([str(corpus[0])], str(corpus[1]), str(out), options(max_steps=12, lr=3e-3, precision=precision))
        rows = [line.split("\t") for line in (out / "log.tsv").read_text().splitlines()[1:]]
        return np.array([float(r[3]) for r in rows])

    fp32, bf16 = losses("fp32"), losses("bf16")
    assert not np.array_equal(fp32, bf16)
    assert np.abs(fp32 - bf16).max() < np.median(np.abs(np.diff(fp32)))
    from safetensors.torch import load_file

    weights = load_file(tmp_path / "bf16" / "checkpoint" / "model.safetensors")
    assert {t.dtype for t in weights.values()} == {torch.float32}


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_checkpoint_files_follow_the_umask(tmp_path, corpus, umask):
    """A lab's shared model folder: every checkpoint file gets the mode the umask gives (safetensors writes 0600)."""
    old = os.umask(umask)
    try:
        run_pretrain([str(corpus[0])], str(corpus[1]), str(tmp_path / "m"), options(max_steps=1))
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "m" / "checkpoint").iterdir()]
    assert len(files) == 4
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in files} == {p.name: oct(0o666 & ~umask) for p in files}


def test_resume_continues_exactly(tmp_path, corpus, monkeypatch):
    """Killed (in-process) after the step-3 checkpoint, with dropout on: --resume gives the same weights and log."""
    els, emb = [str(corpus[0])], str(corpus[1])
    run_pretrain(els, emb, str(tmp_path / "straight"), options(dropout=0.1))
    die_after_checkpoint(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        run_pretrain(els, emb, str(tmp_path / "resumed"), options(dropout=0.1))
    monkeypatch.undo()
    run_pretrain(els, emb, str(tmp_path / "resumed"), options(dropout=0.1), resume=True)
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "straight" / "checkpoint" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "checkpoint" / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=0, rtol=0)
    # the log after resume equals the uninterrupted run's (all but the timings), validation included
    logs = [[line.split("\t")[:-3] for line in (tmp_path / d / "log.tsv").read_text().splitlines()]
            for d in ("straight", "resumed")]
    assert logs[0] == logs[1] and len(logs[0]) == 7
    assert [r[4] for r in logs[0][1:]] == ["", ""] + [logs[0][3][4]] * 3 + [logs[0][6][4]]  # no val before step 3
    assert logs[0][3][4] != ""


def test_force_keeps_the_old_output_until_its_replacement_is_whole(tmp_path, corpus, monkeypatch):
    """--force over a trained output trains in .NAME.work: killed, the old output is untouched and --resume
    continues the replacement; finished, it replaces the old output whole (the same as a run into a new folder)."""
    from conftest import checkpoint_weights

    els, emb, out = [str(corpus[0])], str(corpus[1]), tmp_path / "m"
    run_pretrain(els, emb, str(out), options(max_steps=3, seed=1))
    old = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    die_after_checkpoint(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        run_pretrain(els, emb, str(out), options(), force=True)
    monkeypatch.undo()
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == old
    assert (tmp_path / ".m.work" / "checkpoint" / "config.json").is_file()
    with pytest.raises(GlmkitError, match="output exists; use --resume"):   # a plain run still may not replace it
        run_pretrain(els, emb, str(out), options())
    run_pretrain(els, emb, str(out), options(), resume=True)
    run_pretrain(els, emb, str(tmp_path / "straight"), options())
    a, b = checkpoint_weights(out), checkpoint_weights(tmp_path / "straight")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".m")) == []   # nothing left beside
    assert {p.name for p in out.iterdir()} == {"checkpoint", "corpus.zarr", "log.tsv", "curves.png"}


def test_a_failed_replacement_keeps_the_old_output(tmp_path, corpus):
    els, emb, out = [str(corpus[0])], str(corpus[1]), tmp_path / "m"
    run_pretrain(els, emb, str(out), options(max_steps=3))
    old = (out / "checkpoint" / "model.safetensors").read_bytes()
    with pytest.raises(GlmkitUsageError, match="--batch-size 4096"):   # found after the folders are judged
        run_pretrain(els, emb, str(out), options(batch_size=4096), force=True)
    assert (out / "checkpoint" / "model.safetensors").read_bytes() == old and not (tmp_path / ".m.work").exists()


def test_corpus_never_replaces_what_glmkit_did_not_write(tmp_path, corpus):
    results = tmp_path / "results"
    results.mkdir()
    (results / "mine.txt").write_text("a user's file\n")
    for force in (False, True):
        with pytest.raises(GlmkitError, match="results: exists and is not a gLM corpus store; glmkit will not"):
            run_pretrain([str(corpus[0])], str(corpus[1]), str(tmp_path / "m"),
                         options(max_steps=1, corpus=str(results)), force=force)
    assert [p.name for p in results.iterdir()] == ["mine.txt"] and not (tmp_path / "m").exists()


@pytest.mark.parametrize("change, flag", [({"batch_size": 8}, "--batch-size 8"), ({"seed": 3}, "--seed 3"),
                                          ({"dropout": 0.2}, "--dropout 0.2"), ({"accumulate": 2}, "--accumulate 2"),
                                          ({"recipe": "reference"}, "--recipe reference"),
                                          ({"hidden_size": 64}, "--hidden-size 64")])
def test_resume_refuses_options_that_change_the_run(tmp_path, corpus, change, flag):
    run_pretrain([str(corpus[0])], str(corpus[1]), str(tmp_path / "m"), options(max_steps=3))
    before = (tmp_path / "m" / "checkpoint" / "model.safetensors").read_bytes()
    with pytest.raises(GlmkitUsageError, match=f"{flag} differs from the .* of the checkpoint"):
        run_pretrain([str(corpus[0])], str(corpus[1]), str(tmp_path / "m"), options(max_steps=6, **change),
                     resume=True)
    assert (tmp_path / "m" / "checkpoint" / "model.safetensors").read_bytes() == before
    # what only extends or re-tunes the run is allowed: more steps, another learning rate
    run_pretrain([str(corpus[0])], str(corpus[1]), str(tmp_path / "m"), options(max_steps=5, lr=5e-4), resume=True)


def test_corpus_store_is_built_once_and_reused(tmp_path, corpus, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="glmkit")
    shared = tmp_path / "shared_corpus.zarr"
    run_pretrain([str(corpus[0])], str(corpus[1]), str(tmp_path / "a"), options(max_steps=1, corpus=str(shared)))
    built = zarr.open_group(str(shared)).attrs["glmkit_version"] is not None and shared.stat().st_mtime_ns
    run_pretrain([str(corpus[0])], str(corpus[1]), str(tmp_path / "b"), options(max_steps=1, corpus=str(shared)))
    assert shared.stat().st_mtime_ns == built and "reusing the corpus store" in caplog.text
    assert not (tmp_path / "a" / "corpus.zarr").exists()


def test_corpus_store_is_rebuilt_when_its_inputs_change(tmp_path, corpus, esm_checkpoint, caplog):
    """A corpus store built from other inputs (here: the same element store, another embedding store) is not
    used: without --force it is refused (a shared --corpus may be another run's), with it rebuilt, and the run
    says so."""
    import logging

    from conftest import make_fair_esm_checkpoint

    shared = tmp_path / "shared.zarr"
    make_fair_esm_checkpoint(tmp_path / "other.pt", seed=7)
    # embed first: the CLI sets up its own log handlers, which would hide the later lines from caplog
    assert run("embed", corpus[0], "-o", tmp_path / "emb2.zarr", "-m", tmp_path / "other.pt", "-q").exit_code == 0
    caplog.set_level(logging.INFO, logger="glmkit")
    run_pretrain([str(corpus[0])], str(corpus[1]), str(tmp_path / "a"), options(max_steps=1, corpus=str(shared)))
    with pytest.raises(GlmkitError, match="shared.zarr: a corpus store built from other inputs; use --force"):
        run_pretrain([str(corpus[0])], str(tmp_path / "emb2.zarr"), str(tmp_path / "b"),
                     options(max_steps=1, corpus=str(shared)))
    assert not (tmp_path / "b").exists()
    run_pretrain([str(corpus[0])], str(tmp_path / "emb2.zarr"), str(tmp_path / "b"),
                 options(max_steps=1, corpus=str(shared)), force=True)
    assert f"{shared} was built from other inputs: rebuilding it" in caplog.text
    from glmkit.io.corpus import CorpusStore
    from glmkit.io.embeddings import EmbeddingStore

    rebuilt = CorpusStore(shared)
    store = EmbeddingStore(tmp_path / "emb2.zarr")
    np.testing.assert_array_equal(rebuilt.embedding[:], store.embedding[:][rebuilt.array("genes/row")[:]])


def test_a_corpus_smaller_than_the_batch_is_refused(tmp_path, corpus):
    with pytest.raises(GlmkitUsageError, match=r"--batch-size 64: the training split has only \d+ sub-contigs"):
        run_pretrain([str(corpus[0])], str(corpus[1]), str(tmp_path / "m"), options(batch_size=64))
    assert not (tmp_path / "m").exists()


def test_reference_recipe(tmp_path, corpus):
    """--recipe reference: the gLM train.py's optimiser settings, and it trains."""
    o = loop_options(options(recipe="reference"))
    assert (o.weight_decay, o.eps, o.schedule, o.grad_clip) == (0.0, 1e-6, "constant", None)
    g = loop_options(options())
    assert (g.weight_decay, g.eps, g.schedule, g.grad_clip) == (0.01, 1e-8, "linear", 1.0)
    result = run_pretrain([str(corpus[0])], str(corpus[1]), str(tmp_path / "m"), options(recipe="reference"))
    assert result["step"] == 6 and np.isfinite(result["val_loss"])


def test_warmup_default_scales_with_short_runs():
    assert warmup_steps(PretrainOptions(max_steps=100_000)) == 5_000
    assert warmup_steps(PretrainOptions(max_steps=200)) == 20
    assert warmup_steps(PretrainOptions(max_steps=200, warmup_steps=7)) == 7


# -- bad input ----------------------------------------------------------------------------------------------

def test_nan_embeddings_are_refused_naming_genes(tmp_path, corpus):
    shutil.copytree(corpus[1], tmp_path / "nan.zarr")
    from glmkit.io.embeddings import EmbeddingStore, PlannedRows, ResumableEmbeddingWriter

    store = EmbeddingStore(corpus[1])
    values = store.embedding[:]
    values[5, 3] = np.nan
    rows = PlannedRows.in_memory(store.hashes, store.lengths)
    writer = ResumableEmbeddingWriter(tmp_path / "nan2.zarr", {}, [], rows, values.shape[1], "float32", store.model,
                                      len(values))
    writer.write_chunk(0, values)
    writer.publish([])
    with pytest.raises(GlmkitError, match=r"NaN or infinite embeddings for 1 protein \(genes contig_"):
        run_pretrain([str(corpus[0])], str(tmp_path / "nan2.zarr"), str(tmp_path / "m"), options())
    assert not (tmp_path / "m").exists()


def test_loss_turning_nan_stops_and_keeps_last_checkpoint(tmp_path, corpus, monkeypatch):
    import glmkit.models.glm.task as glm_task

    real = glm_task.GLMTask.loss
    calls = []

    def poisoned(self, model, batch):
        loss, count = real(self, model, batch)
        calls.append(1)
        return (loss * float("nan"), count) if len(calls) > 4 else (loss, count)

    monkeypatch.setattr(glm_task.GLMTask, "loss", poisoned)
    with pytest.raises(GlmkitError, match=r"loss became NaN or infinite before step 5; the last good checkpoint "
                                          r"\(step 3\)"):
        run_pretrain([str(corpus[0])], str(corpus[1]), str(tmp_path / "m"), options(val_every=100))
    assert json.loads((tmp_path / "m" / "checkpoint" / "config.json").read_text())["step"] == 3


def test_resume_refuses_other_embeddings_and_architectures(tmp_path, corpus, esm_checkpoint):
    run_pretrain([str(corpus[0])], str(corpus[1]), str(tmp_path / "m"), options(max_steps=3))
    other = tmp_path / "same_name" / "esm2_t2_test.pt"  # same name, other weights: the checksum tells
    other.parent.mkdir()
    from conftest import make_fair_esm_checkpoint

    make_fair_esm_checkpoint(other, seed=1)
    assert run("embed", corpus[0], "-o", tmp_path / "emb2.zarr", "-m", other, "-q").exit_code == 0
    with pytest.raises(GlmkitError, match="emb2.zarr: embeddings from esm2_t2_test .*sha256.* was trained on"):
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
    assert_one_line_error(run("pretrain", corpus[0], "-e", corpus[1], "-o", tmp_path / "k", "--batch-size", "6",
                              "--accumulate", "4", "-q"), "--batch-size 6 must be a multiple", status=2)


def test_no_subcontigs_left(tmp_path, corpus):
    from conftest import build_store, cds, igs

    build_store(tmp_path / "short.zarr", [("c", 5000, [cds(), igs(), cds(), igs(), cds()])])
    with pytest.raises(GlmkitError, match="no sub-contigs of at least 8 genes"):
        run_pretrain([str(tmp_path / "short.zarr")], str(corpus[1]), str(tmp_path / "m"), options())
    assert not (tmp_path / "m").exists()


# -- --init: training that starts from a model ----------------------------------------------------------------------

def _log(out):
    rows = [line.split("\t") for line in (out / "log.tsv").read_text().splitlines()]
    return [dict(zip(rows[0], r)) for r in rows[1:]]


@pytest.fixture(scope="module")
def source_model(tmp_path_factory, corpus):
    out = tmp_path_factory.mktemp("init") / "source"
    run_pretrain([str(corpus[0])], str(corpus[1]), str(out), options(max_steps=6, lr=3e-3))
    return out


def test_init_starts_from_the_models_weights_and_records_them(tmp_path, corpus, source_model):
    """With learning rate 0 the weights stay the source's, and the first validation is the source model's own
    last validation on the same held-out contigs (same seed: the same split and masks)."""
    from conftest import checkpoint_weights
    from glmkit.io.files import file_sha256

    els, emb = [str(corpus[0])], str(corpus[1])
    run_pretrain(els, emb, str(tmp_path / "n"), options(max_steps=3, val_every=1, lr=0.0), init=str(source_model))
    a, b = checkpoint_weights(source_model), checkpoint_weights(tmp_path / "n")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    first, source_last = _log(tmp_path / "n")[0], [r for r in _log(source_model) if r["val_loss"]][-1]
    assert first["step"] == "1" and source_last["step"] == "6"
    for key in ("val_loss", "val_pseudo_accuracy", "val_mean_label_loss"):
        assert float(first[key]) == pytest.approx(float(source_last[key]), rel=1e-6, abs=1e-7), key
    meta = json.loads((tmp_path / "n" / "checkpoint" / "config.json").read_text())
    assert meta["init"] == {"path": str(source_model.resolve()), "architecture": "gLM",
                            "sha256": file_sha256(source_model / "checkpoint" / "model.safetensors")}
    assert meta["config"] == json.loads((source_model / "checkpoint" / "config.json").read_text())["config"]
    # a fresh optimiser: the learning rate warms up again from step 1
    assert float(_log(tmp_path / "n")[0]["lr"]) == 0.0
    run_pretrain(els, emb, str(tmp_path / "trained"), options(max_steps=2), init=str(source_model))
    assert _log(tmp_path / "trained")[0]["lr"] != _log(source_model)[-1]["lr"]
    c = checkpoint_weights(tmp_path / "trained")
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_init_then_resume_equals_an_uninterrupted_init_run(tmp_path, corpus, source_model, monkeypatch):
    els, emb, init = [str(corpus[0])], str(corpus[1]), str(source_model)
    run_pretrain(els, emb, str(tmp_path / "straight"), options(dropout=0.1), init=init)
    die_after_checkpoint(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        run_pretrain(els, emb, str(tmp_path / "resumed"), options(dropout=0.1), init=init)
    monkeypatch.undo()
    run_pretrain(els, emb, str(tmp_path / "resumed"), options(dropout=0.1), resume=True, init=init)
    from conftest import checkpoint_weights

    a, b = checkpoint_weights(tmp_path / "straight"), checkpoint_weights(tmp_path / "resumed")
    assert all(torch.equal(a[k], b[k]) for k in a)
    logs = [[r for r in _log(tmp_path / d)] for d in ("straight", "resumed")]
    assert [(r["step"], r["train_loss"], r["val_loss"]) for r in logs[0]] == \
        [(r["step"], r["train_loss"], r["val_loss"]) for r in logs[1]]
    meta = json.loads((tmp_path / "resumed" / "checkpoint" / "config.json").read_text())
    assert meta["init"]["path"] == str(source_model.resolve())
    # resumed from another model than it started from: refused
    with pytest.raises(GlmkitUsageError, match="did not start from this model"):
        run_pretrain(els, emb, str(tmp_path / "resumed"), options(dropout=0.1, max_steps=8), resume=True,
                     init=str(tmp_path / "straight"))


def test_init_refuses_other_shapes_families_and_embeddings(tmp_path, corpus, source_model, esm_checkpoint):
    els, emb, init = [str(corpus[0])], str(corpus[1]), str(source_model)
    with pytest.raises(GlmkitUsageError, match="--num-layers: the model's shape comes from --init"):
        run_pretrain(els, emb, str(tmp_path / "a"), options(num_layers=3), init=init)
    assert_one_line_error(run("pretrain", corpus[0], "-e", corpus[1], "-o", tmp_path / "b", "--init", init,
                              "--preset", "small"), "--preset: the model's shape comes from --init", status=2)
    assert_one_line_error(run("pretrain", corpus[0], "-o", tmp_path / "c", "--init", init, "--arch", "glm2"),
                          "is a gLM model; --arch glm2 trains a gLM2", status=2)
    assert_one_line_error(run("pretrain", corpus[0], "-e", corpus[1], "-o", tmp_path / "d", "--init",
                              tmp_path / "nowhere"), "nowhere", "no such file")
    # embeddings of another ESM2 than the model's normalisation and PCA were fitted on
    other = tmp_path / "other_esm.pt"
    from conftest import make_fair_esm_checkpoint

    make_fair_esm_checkpoint(other, seed=5, layers=3)
    assert run("embed", corpus[0], "-o", tmp_path / "other.zarr", "-m", other, "-q").exit_code == 0
    assert_one_line_error(run("pretrain", corpus[0], "-e", tmp_path / "other.zarr", "-o", tmp_path / "e", "--init",
                              init), "other.zarr", "was trained on esm2_t2_test")
    assert not any((tmp_path / n).exists() for n in "abcde")
