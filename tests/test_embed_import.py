"""glmkit embed --import-embeddings: embeddings computed elsewhere, in fair-esm's extractor layout, the gLM's
pickle and .npy + ids, become the same embedding store; every mismatch is one line naming the protein."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from conftest import assert_one_line_error, fair_esm_mean, run
from glmkit.io.embeddings import EmbeddingStore
from test_embed import embedded, proteins, write_faa


@pytest.fixture
def made(tmp_path, esm_checkpoint):
    """A FASTA (one sequence twice under two ids) and its fair-esm embeddings of layer 2 from fair-esm's own model."""
    path, model, alphabet = esm_checkpoint
    seqs = proteins(12, seed=3)
    seqs.append(seqs[4])
    names = [f"prot_{i}" for i in range(len(seqs))]
    faa = write_faa(tmp_path / "p.faa", seqs, names)
    vectors = fair_esm_mean(model, alphabet, seqs, layer=2)
    return faa, seqs, names, vectors


def write_extract_folder(folder, names, vectors, layers=(2,)):
    """What fair-esm's scripts/extract.py --include mean writes: LABEL.pt per protein, saved by torch."""
    folder.mkdir()
    for name, v in zip(names, vectors):
        torch.save({"label": f"{name} some description",
                    "mean_representations": {layer: torch.from_numpy(v).clone() * (1 if layer == 2 else 0)
                                             for layer in layers}}, folder / f"{name}.pt")
    return folder


def test_three_layouts_give_the_store_embed_computes(tmp_path, made, esm_checkpoint):
    faa, seqs, names, vectors = made
    assert run("embed", faa, "-o", tmp_path / "computed.zarr", "-m", esm_checkpoint[0], "-q").exit_code == 0
    write_extract_folder(tmp_path / "extract", names, vectors)
    with open(tmp_path / "embs.pkl", "wb") as fh:  # the gLM's plm_embed.py: [(label, numpy array), ...]
        pickle.dump([(f"{n} some description", v) for n, v in zip(names, vectors)], fh)
    np.save(tmp_path / "embs.npy", np.stack(vectors))
    (tmp_path / "ids.txt").write_text("\n".join(names) + "\n")
    layouts = {"extract": [tmp_path / "extract"], "pickle": [tmp_path / "embs.pkl", "--layer", 2],
               "npy": [tmp_path / "embs.npy", "--import-ids", tmp_path / "ids.txt", "--layer", 2]}
    computed = embedded(tmp_path / "computed.zarr", seqs)
    for name, args in layouts.items():
        r = run("embed", faa, "-o", tmp_path / f"{name}.zarr", "--import-embeddings", *args,
                "--import-model", "esm2_t2_test")
        assert r.exit_code == 0, (name, r.stderr)
        got = embedded(tmp_path / f"{name}.zarr", seqs)
        np.testing.assert_allclose(got, computed, atol=1e-4, err_msg=name)
        np.testing.assert_array_equal(got, np.stack(vectors).astype(np.float32), err_msg=name)
        store = EmbeddingStore(tmp_path / f"{name}.zarr")
        assert len(store) == len(set(seqs))
        assert store.model["name"] == "esm2_t2_test" and store.model["layer"] == 2 and store.model["sha256"] is None
        assert store.model["source"].startswith("imported")
    # an imported store extended by the model that made it: the name and layer agree, sha256 is not known
    more = write_faa(tmp_path / "more.faa", proteins(3, seed=9), ["new_0", "new_1", "new_2"])
    r = run("embed", tmp_path / "extract.zarr", more, "-o", tmp_path / "extended.zarr", "-m", esm_checkpoint[0], "-q")
    assert r.exit_code == 0, r.stderr
    assert len(EmbeddingStore(tmp_path / "extended.zarr")) == len(set(seqs)) + 3


def test_a_folder_with_several_layers_needs_layer(tmp_path, made):
    faa, seqs, names, vectors = made
    write_extract_folder(tmp_path / "extract", names, vectors, layers=(1, 2))
    r = run("embed", faa, "-o", tmp_path / "e.zarr", "--import-embeddings", tmp_path / "extract",
            "--import-model", "m")
    assert_one_line_error(r, "layers [1, 2]: say which with --layer")
    r = run("embed", faa, "-o", tmp_path / "e.zarr", "--import-embeddings", tmp_path / "extract",
            "--import-model", "m", "--layer", 2, "-q")
    assert r.exit_code == 0, r.stderr
    np.testing.assert_array_equal(embedded(tmp_path / "e.zarr", seqs), np.stack(vectors))


def _pickle(path, pairs):
    with open(path, "wb") as fh:
        pickle.dump(pairs, fh)
    return path


def test_mismatches_are_one_line_naming_the_protein(tmp_path, made):
    faa, seqs, names, vectors = made
    pairs = list(zip(names, vectors))
    cases = {
        "stray id": (pairs + [("ghost", vectors[0])], "protein 'ghost' has no sequence in the inputs"),
        "missing": (pairs[:5] + pairs[6:], "no embedding for protein 'prot_5'"),
        "dimension": (pairs[:3] + [(names[3], vectors[3][:10])] + pairs[4:], "'prot_3' has shape (10,)"),
        "nan": (pairs[:2] + [(names[2], np.full_like(vectors[2], np.nan))] + pairs[3:], "'prot_2' holds NaN"),
        "duplicate": (pairs + [pairs[0]], "protein id 'prot_0' appears twice"),
    }
    for name, (content, message) in cases.items():
        path = _pickle(tmp_path / f"{name.replace(' ', '_')}.pkl", content)
        r = run("embed", faa, "-o", tmp_path / "e.zarr", "--import-embeddings", path, "--import-model", "m",
                "--layer", 2, "-q")
        assert_one_line_error(r, message)
        assert not (tmp_path / "e.zarr").exists(), name
    # the duplicate sequence under another id may come without its own embedding: the first id's serves
    ok = _pickle(tmp_path / "ok.pkl", pairs[:-1])
    assert run("embed", faa, "-o", tmp_path / "e.zarr", "--import-embeddings", ok, "--import-model", "m",
               "--layer", 2, "-q").exit_code == 0


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_unsafe_or_incomplete_imports_are_refused(tmp_path, made):
    faa, seqs, names, vectors = made
    evil = _pickle(tmp_path / "evil.pkl", [(names[0], _RunsCode(tmp_path / "ran"))])
    r = run("embed", faa, "-o", tmp_path / "e.zarr", "--import-embeddings", evil, "--import-model", "m",
            "--layer", 2)
    assert_one_line_error(r, "evil.pkl: refused to load")
    assert not (tmp_path / "ran").exists()
    np.save(tmp_path / "e.npy", np.stack(vectors))
    assert_one_line_error(run("embed", faa, "-o", tmp_path / "e.zarr", "--import-embeddings", tmp_path / "e.npy",
                              "--import-model", "m", "--layer", 2), "needs --import-ids")
    (tmp_path / "few.txt").write_text("prot_0\n")
    assert_one_line_error(run("embed", faa, "-o", tmp_path / "e.zarr", "--import-embeddings", tmp_path / "e.npy",
                              "--import-ids", tmp_path / "few.txt", "--import-model", "m", "--layer", 2),
                          "few.txt: 1 ids for the 13 rows")
    assert_one_line_error(run("embed", faa, "-o", tmp_path / "e.zarr", "--import-embeddings", tmp_path / "e.npy"),
                          "needs --import-model", status=2)
    assert_one_line_error(run("embed", faa, "-o", tmp_path / "e.zarr", "--import-embeddings", tmp_path / "e.npy",
                              "--import-model", "m", "-m", "x"), "cannot be combined with --model", status=2)
