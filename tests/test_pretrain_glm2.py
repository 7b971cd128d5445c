"""glmkit pretrain --arch glm2: outputs, the recipe's settings, exact resume, refusals, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import assert_one_line_error, build_store, cds, die_after_checkpoint, link_inputs, run
from glmkit.errors import GlmkitError, GlmkitUsageError
from glmkit.commands.pretrain import PretrainOptions, loop_options, resolved, run_pretrain


@pytest.fixture(scope="module")
def elements(tmp_path_factory, called_store):
    d = tmp_path_factory.mktemp("glm2")
    link_inputs(d, called_store)
    return d / "el.zarr"


def options(**kw):
    base = dict(arch="glm2", preset="tiny", context=256, max_steps=6, batch_size=4, warmup_steps=2, val_every=3,
                checkpoint_every=3, log_every=1, lr=3e-3, val_fraction=0.2, threads=1)
    return PretrainOptions(**{**base, **kw})


def test_trains_and_writes_checkpoint_log_and_curves(tmp_path, elements):
    result = run_pretrain([str(elements)], None, str(tmp_path / "m"), options(max_steps=12))
    assert result["step"] == 12 and 0 <= result["val_aa_accuracy"] <= 1
    out = tmp_path / "m"
    assert {p.name for p in out.iterdir()} == {"checkpoint", "corpus.zarr", "log.tsv", "curves.png"}
    assert {p.name for p in (out / "checkpoint").iterdir()} == {"config.json", "model.safetensors",
                                                                "training_state.pt"}
    meta = json.loads((out / "checkpoint" / "config.json").read_text())
    assert meta["architecture"] == "gLM2" and meta["config"]["dim"] == 32 and meta["options"]["mask_fraction"] == 0.3
    rows = [line.split("\t") for line in (out / "log.tsv").read_text().splitlines()]
    assert rows[0] == ["step", "epoch", "lr", "train_loss", "val_loss", "val_aa_accuracy", "val_nt_accuracy",
                       "val_aa_perplexity", "val_nt_perplexity", "val_aa_unigram_perplexity",
                       "val_nt_unigram_perplexity", "val_unigram_loss", "seconds", "tokens_per_s", "data_wait"]
    losses = [float(r[3]) for r in rows[1:]]
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) < np.log(37) + 0.2  # it learns something
    assert run("validate", out / "corpus.zarr", "-q").exit_code == 0


def test_the_omg_recipe():
    o = resolved(options(lr=None))
    loop = loop_options(o)
    assert (o.mask_fraction, o.lr, o.weight_decay) == (0.3, 1e-3, 0.1)
    assert loop.betas == (0.9, 0.95) and loop.schedule == "cosine" and loop.grad_clip == 1.0
    glm = loop_options(resolved(PretrainOptions()))
    assert glm.betas == (0.9, 0.999) and glm.schedule == "linear" and glm.weight_decay == 0.01


def test_resume_continues_exactly(tmp_path, elements, monkeypatch):
    """Killed (in-process) after the step-3 checkpoint: --resume gives the same weights and log."""
    els = [str(elements)]
    run_pretrain(els, None, str(tmp_path / "straight"), options())
    die_after_checkpoint(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        run_pretrain(els, None, str(tmp_path / "resumed"), options())
    monkeypatch.undo()
    run_pretrain(els, None, str(tmp_path / "resumed"), options(), resume=True)
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "straight" / "checkpoint" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "checkpoint" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    logs = [[line.split("\t")[:-3] for line in (tmp_path / d / "log.tsv").read_text().splitlines()]
            for d in ("straight", "resumed")]
    assert logs[0] == logs[1] and len(logs[0]) == 7


def test_checkpoints_record_their_tokenisation_and_old_ones_resume_with_theirs(tmp_path, elements):
    """A new training tokenises as the published tokenizer (no <cls>) and records it; a checkpoint from before the
    record (no "tokens" in config.json) resumes on a corpus rebuilt with the <cls> and X it was trained with."""
    from glmkit.io.token_corpus import TokenCorpusStore
    from glmkit.models.glm2.tokens import CLS, LEGACY, PLUS, MINUS, PUBLISHED

    out = tmp_path / "m"
    run_pretrain([str(elements)], None, str(out), options(max_steps=3))
    meta_path = out / "checkpoint" / "config.json"
    meta = json.loads(meta_path.read_text())
    assert meta["tokens"] == PUBLISHED.record() == meta["corpus"]["tokens"]
    corpus = TokenCorpusStore(out / "corpus.zarr")
    assert corpus.tokens(0, 1)[0] in (PLUS, MINUS) and CLS not in corpus.tokens(0, corpus.n_tokens)
    del meta["tokens"], meta["corpus"]["tokens"]   # as glmkit wrote checkpoints before the record
    meta_path.write_text(json.dumps(meta))
    result = run_pretrain([str(elements)], None, str(out), options(max_steps=6), resume=True)
    assert result["step"] == 6
    corpus = TokenCorpusStore(out / "corpus.zarr")
    starts = corpus.array("chunks/start")[:]
    assert (corpus.tokens(0, corpus.n_tokens)[starts] == CLS).all()
    assert json.loads(meta_path.read_text())["tokens"] == LEGACY.record()


def test_resume_refuses_another_context_or_architecture(tmp_path, elements, esm_checkpoint):
    run_pretrain([str(elements)], None, str(tmp_path / "m"), options(max_steps=3))
    with pytest.raises(GlmkitUsageError, match="--context 128 differs from the 256 of the checkpoint"):
        run_pretrain([str(elements)], None, str(tmp_path / "m"), options(max_steps=6, context=128), resume=True)
    # a gLM2 checkpoint is not a gLM one, and the reverse
    assert run("embed", elements, "-o", tmp_path / "emb.zarr", "-m", esm_checkpoint[0], "-q").exit_code == 0
    with pytest.raises(GlmkitError, match="a gLM2 checkpoint; expected gLM"):
        run_pretrain([str(elements)], str(tmp_path / "emb.zarr"), str(tmp_path / "m"),
                     PretrainOptions(preset="tiny", max_steps=6, batch_size=4, val_fraction=0.2), resume=True)


def test_cli_errors(tmp_path, elements):
    base = ["pretrain", elements, "--arch", "glm2", "-o", tmp_path / "m", "--preset", "tiny", "--context", "256"]
    assert_one_line_error(run(*base, "-e", elements), "--embeddings is for the gLM", status=2)
    assert_one_line_error(run(*base[:-4], "--preset", "paper"), "--preset paper is not a gLM2 preset", status=2)
    assert_one_line_error(run(*base, "--dropout", "0.1"), "--dropout and --recipe are options of the gLM", status=2)
    assert_one_line_error(run("pretrain", elements, "-o", tmp_path / "g"), "--embeddings is required", status=2)
    assert_one_line_error(run(*base, "--hidden-size", "36", "--num-heads", "4"), "with an even quotient", status=2)
    assert not (tmp_path / "m").exists() and not (tmp_path / "g").exists()


def test_elements_longer_than_the_context_are_cut_and_trained_on(tmp_path):
    """A 900-residue protein and a 500-residue one with --context 256: each is cut into pieces of 255 residues (and
    its strand token), each piece a chunk of its own; training runs on them."""
    store = build_store(tmp_path / "el.zarr", [(f"c{i}", 9000, [cds(aa=b"M" + b"ACDEFGHIKL" * 90),
                                                                 cds(aa=b"MKV" * 166)]) for i in range(6)])
    result = run_pretrain([str(store)], None, str(tmp_path / "m"), options(max_steps=2, val_every=2))
    assert result["step"] == 2
    from glmkit.io.token_corpus import TokenCorpusStore

    corpus = TokenCorpusStore(tmp_path / "m" / "corpus.zarr")
    assert corpus.array("chunks/length")[:].max() == 256 and corpus.attrs["summary"]["elements_cut"] == 12


def test_max_minutes_ends_with_a_validated_logged_checkpoint(tmp_path, elements):
    """--max-minutes stops the run between steps; its last step is validated, logged and checkpointed, whatever
    --val-every and --log-every say."""
    result = run_pretrain([str(elements)], None, str(tmp_path / "m"),
                          options(max_steps=10_000, max_minutes=0.02, val_every=10_000, log_every=10_000,
                                  checkpoint_every=10_000))
    step = result["step"]
    assert 0 < step < 10_000 and result["val_aa_perplexity"] > 0
    rows = [line.split("\t") for line in (tmp_path / "m" / "log.tsv").read_text().splitlines()]
    assert len(rows) == 2 and int(rows[1][0]) == step and rows[1][4] != ""
    meta = json.loads((tmp_path / "m" / "checkpoint" / "config.json").read_text())
    assert meta["step"] == step


def test_max_minutes_zero_still_leaves_the_checkpoint_it_promises(tmp_path, elements):
    result = run_pretrain([str(elements)], None, str(tmp_path / "m"),
                          options(max_steps=10_000, max_minutes=0, val_every=10_000, log_every=10_000,
                                  checkpoint_every=10_000))
    assert result["step"] == 1
    meta = json.loads((tmp_path / "m" / "checkpoint" / "config.json").read_text())
    assert meta["step"] == 1 and (tmp_path / "m" / "log.tsv").read_text().count("\n") == 2


# -- --init ------------------------------------------------------------------------------------------------------------

def test_init_from_a_published_folder_trains_and_loads_back_in_contextualize(tmp_path, elements):
    """A folder of the published layout (written by transformers' save_pretrained): --init reads the architecture
    from it (no --arch, no preset), tokenises as the published tokenizer, and records the weights it started from."""
    from conftest import published_glm2_folder
    from glmkit.models.glm2.model import GLM2Config
    from glmkit.models.glm2.tokens import PUBLISHED
    from glmkit.models.hf_folder import read_weights, weights_sha256

    folder = tmp_path / "gLM2_test"
    published_glm2_folder(folder, GLM2Config(dim=24, depth=2, heads=4, swiglu_multiple_of=16))
    result = run("pretrain", elements, "-o", tmp_path / "m", "--init", folder, "--context", "256", "--max-steps",
                 "2", "--batch-size", "4", "--val-fraction", "0.2", "--threads", "1")
    assert result.exit_code == 0, result.stderr
    meta = json.loads((tmp_path / "m" / "checkpoint" / "config.json").read_text())
    assert meta["architecture"] == "gLM2" and (meta["config"]["dim"], meta["config"]["depth"]) == (24, 2)
    assert meta["tokens"] == PUBLISHED.record()
    assert meta["init"] == {"path": str(folder.resolve()), "architecture": "gLM2",
                            "sha256": weights_sha256(read_weights(folder)[0])}
    result = run("contextualize", elements, "-m", tmp_path / "m", "-o", tmp_path / "ctx.zarr", "--threads", "1")
    assert result.exit_code == 0, result.stderr
    assert_one_line_error(run("pretrain", elements, "-o", tmp_path / "n", "--init", folder, "--hidden-size", "32"),
                          "--hidden-size: the model's shape comes from --init", status=2)


def test_init_from_a_checkpoint_trained_with_cls_keeps_its_tokenisation(tmp_path, elements):
    from glmkit.models.glm2.tokens import LEGACY

    run_pretrain([str(elements)], None, str(tmp_path / "old"), options(max_steps=2))
    meta_path = tmp_path / "old" / "checkpoint" / "config.json"
    meta = json.loads(meta_path.read_text())
    del meta["tokens"], meta["corpus"]["tokens"]   # as glmkit wrote checkpoints before the record
    meta_path.write_text(json.dumps(meta))
    run_pretrain([str(elements)], None, str(tmp_path / "new"), options(max_steps=2, preset="small", lr=0.0),
                 init=str(tmp_path / "old"))
    new = json.loads((tmp_path / "new" / "checkpoint" / "config.json").read_text())
    assert new["tokens"] == LEGACY.record() and new["config"] == meta["config"]
