"""The gLM authors' release: safe pickles, import-glm, export-glm, the reference's arithmetic and batching.

Release files are made here with scikit-learn and torch themselves (the real
release cannot be downloaded here); the reference arithmetic is a direct
transcription of the gLM's data/batch_data.py written in this file.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import zarr

from conftest import TEST_DATA, assert_one_line_error, run
from glmkit.errors import GlmkitError
from glmkit.io.elements import ElementStore
from glmkit.io.embeddings import EmbeddingStore, sequence_hash
from glmkit.io.safe_pickle import PickledEstimator, load_pickle
from glmkit.models.glm.model import GLM, GLMConfig
from glmkit.models.glm.weights import to_reference_state

sklearn = pytest.importorskip("sklearn")
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402


# -- the restricted unpickler --------------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_scikit_learn_estimators_come_back_as_plain_data(tmp_path, protocol):
    rng = np.random.default_rng(0)
    pca = PCA(n_components=5, whiten=True).fit(rng.normal(size=(50, 12)))
    clf = LogisticRegression().fit(rng.normal(size=(40, 6)), rng.integers(0, 2, 40))
    for name, obj in (("pca", pca), ("clf", clf)):
        with open(tmp_path / f"{name}.pkl", "wb") as fh:
            pickle.dump(obj, fh, protocol=protocol)
    got = load_pickle(tmp_path / "pca.pkl")
    assert isinstance(got, PickledEstimator) and got.name == "PCA"
    np.testing.assert_array_equal(got.state["components_"], pca.components_)
    np.testing.assert_array_equal(got.state["explained_variance_"], pca.explained_variance_)
    assert got.state["whiten"] is True
    got = load_pickle(tmp_path / "clf.pkl")
    assert got.name == "LogisticRegression"
    np.testing.assert_array_equal(got.state["coef_"], clf.coef_)
    np.testing.assert_array_equal(got.state["classes_"], clf.classes_)


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


class _Evil:
    def __reduce__(self):
        return eval, ("__import__('os').system('true')",)


@pytest.mark.parametrize("payload", ["system", "eval", "nested", "other-class"])
def test_a_pickle_that_asks_for_code_is_refused_and_nothing_runs(tmp_path, payload):
    marker = tmp_path / "ran"
    obj = {"system": _RunsCode(marker), "eval": _Evil(), "nested": {"mean": np.zeros(3), "x": [_RunsCode(marker)]},
           "other-class": torch.nn.Linear(2, 2)}[payload]
    path = tmp_path / "norm.pkl"
    path.write_bytes(pickle.dumps(obj))
    with pytest.raises(GlmkitError, match=r"norm\.pkl: refused to load: the pickle asks for \S+") as e:
        load_pickle(path)
    assert "\n" not in str(e.value)
    assert not marker.exists()


def test_truncated_pickle_is_one_line(tmp_path):
    path = tmp_path / "pca.pkl"
    path.write_bytes(pickle.dumps(np.arange(100.0))[:40])
    with pytest.raises(GlmkitError, match=r"pca\.pkl: not a readable pickle"):
        load_pickle(path)


# -- a release made here ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def data(tmp_path_factory, esm_checkpoint):
    d = tmp_path_factory.mktemp("release")
    assert run("call", TEST_DATA / "multi_contigs.fna", "-o", d / "el.zarr", "-q").exit_code == 0
    assert run("embed", d / "el.zarr", "-o", d / "emb.zarr", "-m", esm_checkpoint[0], "-q", "--dtype",
               "float16").exit_code == 0
    return d


def _stored_embeddings(d):
    """Per CDS in contig order: (contig, id, strand, float16 ESM2 embedding as the store holds it)."""
    store, elements = EmbeddingStore(d / "emb.zarr"), ElementStore(d / "el.zarr")
    out = []
    for batch in elements.batches():
        contig_of = np.repeat(np.arange(len(batch.counts)), batch.counts)
        for i in np.flatnonzero(batch.elements["type"] == 0):
            out.append((batch.contigs["name"][contig_of[i]], batch.elements["id"][i], int(batch.elements["strand"][i]),
                        store.get([sequence_hash(batch.elements["aa"][i])])[0]))
    return out


def make_release(folder, dim: int, components: int = 9, seed: int = 0, classifier: bool = True):
    """The four release files, written by torch and scikit-learn: a random gLM of glm.bin's layout, the
    normalisation of random embeddings, a whitened PCA fitted on them, a logistic regression on the model's 2 x 4
    (layers x heads) attention features."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cfg = GLMConfig(num_layers=2, hidden_size=32, num_heads=4, intermediate_size=48, input_dim=dim + 1,
                    label_dim=components + 1, dropout=0.0)
    torch.manual_seed(seed)
    model = GLM(cfg)
    with torch.no_grad():  # LayerNorms and biases away from their initial values, so that a misplaced one shows
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    state = to_reference_state(model)
    state["roberta.contact_head.regression.weight"] = torch.zeros(1, 20)  # unused keys the real file has
    torch.save(state, folder / "glm.bin")
    x = rng.normal(0.1, 0.3, size=(400, dim))
    mean, std = x.mean(0), x.std(0)
    with open(folder / "norm.pkl", "wb") as fh:
        pickle.dump({"mean": mean, "std": std}, fh)
    pca = PCA(n_components=components, whiten=True).fit((x - mean) / std)
    with open(folder / "pca.pkl", "wb") as fh:
        pickle.dump(pca, fh)
    if classifier:
        clf = LogisticRegression().fit(rng.normal(size=(60, 2 * 4)), rng.integers(0, 2, 60))
        with open(folder / "operon_predictor.pkl", "wb") as fh:
            pickle.dump(clf, fh)
    return model, pca, (mean, std)


def batch_data_reference(embeddings, strands, mean, std, pca):
    """data/batch_data.py's arithmetic, transcribed: cast to float16, standardise (float64, no clipping), the
    PCA's own transform, orientation +-0.5 appended, both stored as float16."""
    embs = np.array(embeddings, dtype=np.float16)
    normalized = (embs - mean) / std
    labels = pca.transform(normalized)
    ori = np.where(np.asarray(strands) > 0, 0.5, -0.5)[:, None]
    return (np.concatenate([normalized, ori], 1).astype(np.float16),
            np.concatenate([labels, ori], 1).astype(np.float16))


def test_imported_release_feeds_the_model_what_batch_data_does_in_reference_windows(tmp_path, data):
    genes = _stored_embeddings(data)
    dim = len(genes[0][3])
    model, pca, (mean, std) = make_release(tmp_path / "rel", dim)
    r = run("import-glm", tmp_path / "rel" / "glm.bin", "-o", tmp_path / "imported", "--embedding-model",
            EmbeddingStore(data / "emb.zarr").model["name"], "--embedding-layer",
            EmbeddingStore(data / "emb.zarr").model["layer"], "-q")
    assert r.exit_code == 0, r.stderr
    r = run("contextualize", data / "el.zarr", "-e", data / "emb.zarr", "-m", tmp_path / "imported", "-o",
            tmp_path / "ctx.zarr", "--windows", "reference", "--inputs", "-q")
    assert r.exit_code == 0, r.stderr
    ctx = zarr.open_group(str(tmp_path / "ctx.zarr"), mode="r")
    assert list(ctx["genes/id"][:]) == [g[1] for g in genes]
    features, labels = batch_data_reference([g[3] for g in genes], [g[2] for g in genes], mean, std, pca)
    np.testing.assert_array_equal(ctx["genes/input"][:], features.astype(np.float32))
    # scikit-learn's transform and ours differ in float64 rounding only: at most one float16 step apart
    got = ctx["genes/label"][:]
    np.testing.assert_allclose(got, labels.astype(np.float32), rtol=2 ** -10, atol=2 ** -24)
    assert (got == labels.astype(np.float32)).mean() > 0.99

    # the reference batching: each contig's genes in consecutive 30-gene sub-contigs, nothing masked
    contigs = [g[0] for g in genes]
    expected, start = [], 0
    model.eval()
    while start < len(genes):
        end = start
        while end < len(genes) and contigs[end] == contigs[start]:
            end += 1
        for s in range(start, end, 30):
            t = min(s + 30, end)
            with torch.no_grad():
                hidden, _ = model.encode(torch.from_numpy(features[None, s:t].astype(np.float32)),
                                         torch.ones(1, t - s, dtype=torch.long))
            expected.append(hidden[0].numpy())
        start = end
    np.testing.assert_allclose(ctx["genes/embedding"][:], np.concatenate(expected), atol=1e-5)
    assert any(n > 30 for n in np.bincount(ctx["genes/contig"][:]))  # the test crosses a sub-contig boundary


def test_export_then_import_gives_identical_outputs(tmp_path, data):
    from glmkit.commands.pretrain import PretrainOptions, run_pretrain

    run_pretrain([str(data / "el.zarr")], str(data / "emb.zarr"), str(tmp_path / "glm"),
                 PretrainOptions(preset="tiny", max_steps=3, batch_size=4, warmup_steps=1, threads=1))
    assert run("export-glm", tmp_path / "glm", "-o", tmp_path / "rel", "-q").exit_code == 0
    assert sorted(p.name for p in (tmp_path / "rel").iterdir()) == ["glm.bin", "glmkit.json", "norm.pkl", "pca.pkl"]
    # the exported pca.pkl is a working scikit-learn PCA: its transform gives glmkit's labels
    from glmkit.models.glm.normalization import Normalization
    from glmkit.io.checkpoint import load_checkpoint

    meta, _, extras, _ = load_checkpoint(tmp_path / "glm", "gLM")
    norm = Normalization.from_checkpoint(meta, extras["normalization"], "x")
    with open(tmp_path / "rel" / "pca.pkl", "rb") as fh:
        exported = pickle.load(fh)  # scikit-learn's own object, as the reference code loads it
    z = np.random.default_rng(0).normal(size=(20, norm.feature_mean.shape[0])).astype(np.float32)
    np.testing.assert_allclose(exported.transform(z.astype(np.float64)), norm.labels(z), rtol=1e-4, atol=1e-4)

    assert run("import-glm", tmp_path / "rel" / "glm.bin", "-o", tmp_path / "back", "-q").exit_code == 0
    for name in ("glm", "back"):
        r = run("contextualize", data / "el.zarr", "-e", data / "emb.zarr", "-m", tmp_path / name, "-o",
                tmp_path / f"{name}.zarr", "--predictions", "--inputs", "-q")
        assert r.exit_code == 0, r.stderr
    a, b = (zarr.open_group(str(tmp_path / f"{n}.zarr"), mode="r") for n in ("glm", "back"))
    for key in ("genes/embedding", "contigs/embedding", "genes/predictions", "genes/input", "genes/label"):
        np.testing.assert_array_equal(a[key][:], b[key][:], err_msg=key)


def test_import_keeps_the_classifier_and_checksums(tmp_path, data):
    import json

    make_release(tmp_path / "rel", 16)
    assert run("import-glm", tmp_path / "rel" / "glm.bin", "-o", tmp_path / "m", "-q").exit_code == 0
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert set(meta["imported_from"]) == {"glm.bin", "norm.pkl", "pca.pkl", "operon_predictor.pkl"}
    import hashlib

    assert meta["imported_from"]["pca.pkl"]["sha256"] == hashlib.sha256(
        (tmp_path / "rel" / "pca.pkl").read_bytes()).hexdigest()
    assert meta["embedding_model"]["name"] == "esm2_t33_650M_UR50D" and meta["embedding_model"]["layer"] == 33
    assert meta["normalization"]["arithmetic"] == "reference"
    from safetensors.numpy import load_file

    clf = pickle.loads((tmp_path / "rel" / "operon_predictor.pkl").read_bytes())
    saved = load_file(str(tmp_path / "m" / "operon_classifier.safetensors"))
    np.testing.assert_array_equal(saved["coef"], clf.coef_)
    np.testing.assert_array_equal(saved["intercept"], clf.intercept_)
    # the round trip carries the classifier back out
    assert run("export-glm", tmp_path / "m", "-o", tmp_path / "out", "-q").exit_code == 0
    again = pickle.loads((tmp_path / "out" / "operon_predictor.pkl").read_bytes())
    np.testing.assert_array_equal(again.coef_, clf.coef_)
    x = np.random.default_rng(1).normal(size=(5, 8))
    np.testing.assert_array_equal(again.predict_proba(x), clf.predict_proba(x))


def test_import_refuses_bad_release_files_in_one_line(tmp_path, data):
    make_release(tmp_path / "rel", 16, classifier=False)
    rel = tmp_path / "rel"
    (rel / "evil.pkl").write_bytes(pickle.dumps(_RunsCode(tmp_path / "ran")))
    r = run("import-glm", rel / "glm.bin", "--pca", rel / "evil.pkl", "-o", tmp_path / "m")
    assert_one_line_error(r, "evil.pkl: refused to load", "posix.system")
    assert not (tmp_path / "ran").exists() and not (tmp_path / "m").exists()
    with open(rel / "small.pkl", "wb") as fh:
        pickle.dump({"mean": np.zeros(8), "std": np.ones(8)}, fh)
    assert_one_line_error(run("import-glm", rel / "glm.bin", "--norm", rel / "small.pkl", "-o", tmp_path / "m"),
                          "small.pkl: 8 dimensions", "takes 16")
    (rel / "junk.bin").write_bytes(b"not torch")
    assert_one_line_error(run("import-glm", rel / "junk.bin", "--norm", rel / "norm.pkl", "--pca", rel / "pca.pkl",
                              "-o", tmp_path / "m"), "junk.bin: not a readable PyTorch state dict")


def test_imported_model_refuses_embeddings_of_another_esm2(tmp_path, data):
    make_release(tmp_path / "rel", len(_stored_embeddings(data)[0][3]))
    assert run("import-glm", tmp_path / "rel" / "glm.bin", "-o", tmp_path / "m", "-q").exit_code == 0
    r = run("contextualize", data / "el.zarr", "-e", data / "emb.zarr", "-m", tmp_path / "m", "-o", tmp_path / "c")
    assert_one_line_error(r, "emb.zarr: embeddings from", "trained on esm2_t33_650M_UR50D")


def test_pretrain_from_an_imported_release_keeps_its_normalisation_and_pca(tmp_path, data):
    """pretrain --init on an import-glm folder: the released model's norm.pkl and PCA carry on (the corpus's
    embeddings go through them, never refitted), and embeddings of another ESM2 than it names are refused."""
    from safetensors.torch import load_file

    store = EmbeddingStore(data / "emb.zarr")
    make_release(tmp_path / "rel", len(store.embedding[0]))
    assert run("import-glm", tmp_path / "rel" / "glm.bin", "-o", tmp_path / "imported", "--embedding-model",
               store.model["name"], "--embedding-layer", store.model["layer"], "-q").exit_code == 0
    r = run("pretrain", data / "el.zarr", "-e", data / "emb.zarr", "-o", tmp_path / "adapted", "--init",
            tmp_path / "imported", "--max-steps", "2", "--batch-size", "2", "--threads", "1", "-q")
    assert r.exit_code == 0, r.stderr
    a = load_file(str(tmp_path / "imported" / "normalization.safetensors"))
    b = load_file(str(tmp_path / "adapted" / "checkpoint" / "normalization.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert run("contextualize", data / "el.zarr", "-e", data / "emb.zarr", "-m", tmp_path / "adapted", "-o",
               tmp_path / "ctx.zarr", "-q").exit_code == 0
    # imported as the published gLM (esm2_t33_650M_UR50D, layer 33): the test embeddings are not its
    assert run("import-glm", tmp_path / "rel" / "glm.bin", "-o", tmp_path / "published", "-q").exit_code == 0
    assert_one_line_error(run("pretrain", data / "el.zarr", "-e", data / "emb.zarr", "-o", tmp_path / "x", "--init",
                              tmp_path / "published"), "emb.zarr", "was trained on esm2_t33_650M_UR50D")
