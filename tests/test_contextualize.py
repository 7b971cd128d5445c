"""glmkit contextualize: gene and contig embeddings, most-central windows, attention, masked predictions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr

from conftest import assert_one_line_error, host_syncs_inside, link_inputs, make_fair_esm_checkpoint, run
from glmkit.io.elements import CDS, ElementStore
from glmkit.commands.pretrain import PretrainOptions, run_pretrain


@pytest.fixture(scope="module")
def trained(tmp_path_factory, called_store, embedded_store):
    d = tmp_path_factory.mktemp("ctx")
    link_inputs(d, called_store, embedded_store)
    run_pretrain([str(d / "el.zarr")], str(d / "emb.zarr"), str(d / "glm"),
                 PretrainOptions(preset="tiny", max_steps=4, batch_size=4, warmup_steps=1, val_every=2,
                                 checkpoint_every=2, log_every=2, threads=1))
    return d


def _window_of(n_genes: int, position: int, size: int = 30) -> tuple[int, int]:
    """Reference: windows every size/2 (last flush with the end); the one where the gene is most central."""
    if n_genes <= size:
        return 0, n_genes
    starts = sorted(set(list(range(0, n_genes - size, size // 2)) + [n_genes - size]))
    best = max(starts, key=lambda s: (min(position - s, s + size - 1 - position), -s)
               if s <= position < s + size else (-1, 0))
    return best, best + size


def test_gene_embeddings_come_from_the_most_central_window(trained):
    d = trained
    r = run("contextualize", d / "el.zarr", "-e", d / "emb.zarr", "-m", d / "glm", "-o", d / "ctx.zarr",
            "--attention", "--predictions", "-q", "--force")
    assert r.exit_code == 0, r.stderr
    g = zarr.open_group(str(d / "ctx.zarr"), mode="r")
    assert g.attrs["schema"] == "glmkit.context" and g.attrs["complete"]
    ids = list(g["genes/id"][:])
    batch = ElementStore(d / "el.zarr").read()
    e = batch.elements
    cds_by_contig = [[e["id"][i] for i in range(a, b) if e["type"][i] == CDS]
                     for a, b in zip(batch.offsets[:-1], batch.offsets[1:])]
    assert ids == [gene for genes in cds_by_contig for gene in genes]   # every gene once, in contig order

    # recompute a few genes independently: the window, the inputs, the model's last hidden state
    from glmkit.models.glm.normalization import Normalization
    from glmkit.io.checkpoint import load_checkpoint
    from glmkit.io.embeddings import EmbeddingStore, sequence_hash
    from glmkit.models.glm.model import GLM, GLMConfig

    meta, weights, extras, _ = load_checkpoint(d / "glm", "gLM")
    model = GLM(GLMConfig(**meta["config"]))
    model.load_state_dict(weights)
    model.eval()
    norm = Normalization(**{k: v.numpy() for k, v in extras["normalization"].items()})
    store = EmbeddingStore(d / "emb.zarr")
    aa = dict(zip(e["id"], e["aa"]))
    strand = dict(zip(e["id"], e["strand"]))
    genes = cds_by_contig[1]                      # the 60 kb contig: several windows
    assert len(genes) > 40
    emb = g["genes/embedding"][:]
    for p in (0, 7, 20, 33, len(genes) - 1):
        s, t = _window_of(len(genes), p)
        window = genes[s:t]
        x = norm.standardize(store.get([sequence_hash(aa[w]) for w in window]))
        orient = np.array([[0.5 if strand[w] > 0 else -0.5] for w in window], np.float32)
        feats = torch.from_numpy(np.concatenate([x, orient], 1))[None]
        with torch.no_grad():
            hidden = model(feats, torch.ones(1, len(window), dtype=torch.long))[0][0]
        np.testing.assert_allclose(emb[ids.index(genes[p])], hidden[p - s].numpy(), atol=1e-5)

    contig = g["genes/contig"][:]
    np.testing.assert_allclose(g["contigs/embedding"][1], emb[contig == 1].mean(0), atol=1e-6)
    # attention: one block per window, layers x heads x n x n, symmetric, rows of the raw maps summing to 1
    n = g["windows/n_genes"][:]
    offsets = g["attention/offsets"][:]
    L, H = meta["config"]["num_layers"], meta["config"]["num_heads"]
    assert (np.diff(offsets) == L * H * n.astype(np.int64) ** 2).all()
    block = g["attention/data"][offsets[0]:offsets[1]].astype(np.float32).reshape(L, H, n[0], n[0])
    np.testing.assert_allclose(block, block.transpose(0, 1, 3, 2))
    np.testing.assert_allclose(block.sum(-1).mean(-1), 1.0, atol=1e-2)
    lik = g["genes/likelihoods"][:]
    np.testing.assert_allclose(lik.sum(1), 1.0, atol=1e-5)
    assert 0.0 <= g.attrs["summary"]["absolute_accuracy"] <= 1.0


def test_masked_query_attention_is_each_genes_row_from_a_pass_with_it_masked(trained, tmp_path):
    """--attention-queries masked: row i of every map comes from a forward pass of the window with gene i masked
    (its input row set to -1, as training masks), then the map is symmetrised; computed here one gene at a time.
    Predictions, which share that pass, equal a plain run's."""
    from glmkit.models.glm.normalization import Normalization
    from glmkit.io.checkpoint import load_checkpoint
    from glmkit.io.context import ContextStore
    from glmkit.io.embeddings import EmbeddingStore, sequence_hash
    from glmkit.models.glm.model import GLM, GLMConfig

    d = trained
    for name, extra in (("masked", ["--attention-queries", "masked"]), ("plain", [])):
        r = run("contextualize", d / "el.zarr", "-e", d / "emb.zarr", "-m", d / "glm", "-o", tmp_path / f"{name}.zarr",
                "--attention", "--predictions", "-q", *extra)
        assert r.exit_code == 0, r.stderr
    masked, plain = ContextStore(tmp_path / "masked.zarr"), ContextStore(tmp_path / "plain.zarr")
    assert (masked.attention_queries, plain.attention_queries) == ("masked", "plain")
    np.testing.assert_allclose(masked.group["genes/predictions"][:], plain.group["genes/predictions"][:], atol=1e-5)

    meta, weights, extras, _ = load_checkpoint(d / "glm", "gLM")
    model = GLM(GLMConfig(**meta["config"]))
    model.load_state_dict(weights)
    model.eval()
    norm = Normalization(**{k: v.numpy() for k, v in extras["normalization"].items()})
    e = ElementStore(d / "el.zarr").read().elements
    aa, strand = dict(zip(e["id"], e["aa"])), dict(zip(e["id"], e["strand"]))
    ids = masked.gene_ids()
    first, sizes = masked.windows()
    checked, apart = 0, 0.0
    for w in (0, int(np.argmax(sizes))):          # the first window and a full one
        genes = ids[first[w]:first[w] + sizes[w]]
        x = norm.standardize(EmbeddingStore(d / "emb.zarr").get([sequence_hash(aa[g]) for g in genes]))
        orient = np.array([[0.5 if strand[g] > 0 else -0.5] for g in genes], np.float32)
        feats = torch.from_numpy(np.concatenate([x, orient], 1))
        n = len(genes)
        expected = np.zeros((meta["config"]["num_layers"], meta["config"]["num_heads"], n, n))
        for i in range(n):
            f = feats.clone()
            f[i] = -1.0
            with torch.no_grad():
                maps = model(f[None], torch.ones(1, n, dtype=torch.long), need_weights=True)[3]
            for layer, m in enumerate(maps):
                expected[layer, :, i, :] = m[0, :, i, :].numpy()
        expected = (expected + expected.transpose(0, 1, 3, 2)) / 2
        _, stored = next(masked.attention(np.array([w])))
        np.testing.assert_allclose(stored.astype(np.float64), expected, atol=2e-3)   # stored as float16
        _, unmasked = next(plain.attention(np.array([w])))
        apart = max(apart, float(np.abs(unmasked.astype(np.float64) - expected).max()))
        checked += n
    assert checked > 30 and apart > 4e-3   # the plain maps are not within the tolerance (this model's attention
    # is near uniform after 4 steps of training)
    assert_one_line_error(run("contextualize", d / "el.zarr", "-e", d / "emb.zarr", "-m", d / "glm", "-o",
                              tmp_path / "x.zarr", "--attention-queries", "masked", "-q"), "add --attention",
                          status=2)


def test_a_window_batch_makes_the_host_wait_for_nothing(trained, tmp_path, monkeypatch):
    """The real genes' flat positions come from the host's segments (found on the device they made the host wait
    once a batch): no host synchronisation in any model call, with attention and masked predictions too."""
    from glmkit.models.glm.model import GLM

    d = trained
    with host_syncs_inside(monkeypatch, (GLM, "encode"), (GLM, "forward")) as found:
        r = run("contextualize", d / "el.zarr", "-e", d / "emb.zarr", "-m", d / "glm", "-o", tmp_path / "c.zarr",
                "--attention", "--attention-queries", "masked", "--predictions", "-q")
    assert r.exit_code == 0, r.stderr
    assert found["calls"] >= 4 and found["syncs"] == []


def test_layer_option(trained):
    d = trained
    assert run("contextualize", d / "el.zarr", "-e", d / "emb.zarr", "-m", d / "glm", "-o", d / "l0.zarr",
               "--layer", "0", "-q", "--force").exit_code == 0
    assert run("contextualize", d / "el.zarr", "-e", d / "emb.zarr", "-m", d / "glm" / "checkpoint", "-o",
               d / "l2.zarr", "-q", "--force").exit_code == 0
    a = zarr.open_group(str(d / "l0.zarr"))["genes/embedding"][:]
    b = zarr.open_group(str(d / "l2.zarr"))["genes/embedding"][:]
    assert a.shape == b.shape and not np.allclose(a, b)
    assert_one_line_error(run("contextualize", d / "el.zarr", "-e", d / "emb.zarr", "-m", d / "glm", "-o",
                              d / "x.zarr", "--layer", "9", "-q"), "--layer 9")


def test_refuses_embeddings_from_another_model(trained, tmp_path):
    d = trained
    make_fair_esm_checkpoint(tmp_path / "other.pt", seed=3)
    assert run("embed", d / "el.zarr", "-o", tmp_path / "emb2.zarr", "-m", tmp_path / "other.pt", "-q").exit_code == 0
    assert_one_line_error(run("contextualize", d / "el.zarr", "-e", tmp_path / "emb2.zarr", "-m", d / "glm", "-o",
                              tmp_path / "c.zarr", "-q"), "emb2.zarr", "trained on")
    (tmp_path / "not_a_model").mkdir()
    assert_one_line_error(run("contextualize", d / "el.zarr", "-e", d / "emb.zarr", "-m", tmp_path / "not_a_model",
                              "-o", tmp_path / "c.zarr", "-q"), "not a glmkit checkpoint")
    assert not (tmp_path / "c.zarr").exists()


def test_a_model_that_gives_nan_is_refused_and_nothing_published(trained, tmp_path, monkeypatch):
    """Weights that pass the load check can still overflow (a 16-bit precision, extreme inputs): a group of
    non-finite embeddings is refused, never published."""
    import glmkit.models.glm.context as glm_context

    real = glm_context.Job.group

    def overflowing(self, corpus, group):
        result = real(self, corpus, group)
        result["gene_embedding"][0, 0] = np.inf
        return result

    monkeypatch.setattr(glm_context.Job, "group", overflowing)
    d = trained
    assert_one_line_error(run("contextualize", d / "el.zarr", "-e", d / "emb.zarr", "-m", d / "glm", "-o",
                              tmp_path / "c.zarr", "-q"), "c.zarr", "NaN or infinite gene embeddings")
    assert not (tmp_path / "c.zarr").exists()


def test_resume_after_a_crash_equals_an_uninterrupted_run(trained, tmp_path, monkeypatch):
    import glmkit.commands.contextualize as ctx
    import glmkit.models.glm.context as glm_context

    d = trained
    monkeypatch.setattr(glm_context, "GROUP_WINDOWS", 4)  # several groups of contigs in this small corpus
    options = ctx.ContextOptions(attention=True, predictions=True, batch_size=8, threads=1)
    args = ([str(d / "el.zarr")], str(d / "emb.zarr"), str(d / "glm"))
    real_group, all_groups = glm_context._Runner.group, []
    monkeypatch.setattr(glm_context._Runner, "group", lambda self, *a: all_groups.append(1) or real_group(self, *a))
    ctx.run_contextualize(*args, str(tmp_path / "whole.zarr"), options)
    assert len(all_groups) > 3

    calls = []

    def crash_on_third_group(self, *a):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        return real_group(self, *a)

    monkeypatch.setattr(glm_context._Runner, "group", crash_on_third_group)
    with pytest.raises(KeyboardInterrupt):
        ctx.run_contextualize(*args, str(tmp_path / "resumed.zarr"), options)
    assert not (tmp_path / "resumed.zarr").exists()
    assert len(list((tmp_path / ".resumed.zarr.work").glob("group-*.npz"))) == 2
    computed = []
    monkeypatch.setattr(glm_context._Runner, "group", lambda self, *a: computed.append(1) or real_group(self, *a))
    ctx.run_contextualize(*args, str(tmp_path / "resumed.zarr"), options)
    whole, resumed = zarr.open_group(str(tmp_path / "whole.zarr")), zarr.open_group(str(tmp_path / "resumed.zarr"))
    assert len(computed) == len(all_groups) - 2                     # the two saved groups were not recomputed
    for name in ("genes/embedding", "contigs/embedding", "attention/data", "attention/offsets", "genes/predictions",
                 "windows/first_gene", "genes/id", "genes/contig"):
        np.testing.assert_array_equal(whole[name][:], resumed[name][:])
    assert whole.attrs["summary"] == resumed.attrs["summary"]
    assert not (tmp_path / ".resumed.zarr.work").exists()


def _naive_absolute_accuracy(predictions, likelihoods, labels):
    """The paper's absolute accuracy written out directly: own label at least as near as every other label."""
    correct = 0
    for i in range(len(labels)):
        top = predictions[i, likelihoods[i].argmax()]
        d = ((labels - top) ** 2).sum(1)
        correct += d[i] <= np.delete(d, i).min()
    return correct / len(labels)


def test_absolute_accuracy_in_blocks_equals_the_definition():
    from glmkit.models.glm.context import absolute_accuracy

    rng = np.random.default_rng(3)
    n, D = 700, 12
    labels = rng.normal(size=(n, D)).astype(np.float32)
    predictions = rng.normal(size=(n, 4, D)).astype(np.float32)
    likelihoods = rng.random((n, 4)).astype(np.float32)
    best = likelihoods.argmax(1)
    near = rng.random(n) < 0.4  # some predictions near their label, some not
    predictions[np.flatnonzero(near), best[near]] = labels[near] + 0.3 * rng.normal(size=(near.sum(), D))
    expected = _naive_absolute_accuracy(predictions, likelihoods, labels)
    assert 0.2 < expected < 0.8
    for block in (1, 7, 64, 700, 4096):  # blocks that split, straddle and exceed the diagonal
        assert absolute_accuracy(predictions, likelihoods, labels, block=block) == expected


def test_absolute_accuracy_memory_does_not_grow_with_genes():
    """12,000 genes: the (n, n, 100) array of the first version would be 58 GB; blocks keep it to tens of MB."""
    import tracemalloc

    from glmkit.models.glm.context import absolute_accuracy

    rng = np.random.default_rng(0)
    n = 12_000
    labels = rng.normal(size=(n, 100)).astype(np.float32)
    predictions = np.repeat(labels[:, None], 4, 1) + 0.01 * rng.normal(size=(n, 4, 100)).astype(np.float32)
    likelihoods = rng.random((n, 4)).astype(np.float32)
    tracemalloc.start()
    accuracy = absolute_accuracy(predictions, likelihoods, labels)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert accuracy == 1.0
    assert peak < 100e6, peak  # float64 copies of the inputs (10 MB each), two 2,048 x 2,048 blocks (34 MB each)
