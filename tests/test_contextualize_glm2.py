"""glmkit contextualize on gLM2 models: element and contig embeddings against a naive per-contig computation,
published folders, resume, and the options that belong to the gLM only."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr

from conftest import assert_one_line_error, link_inputs, published_glm2_folder, run
from glmkit.io.elements import CDS, ElementStore
from glmkit.models.glm2.model import GLM2Config
from glmkit.models.glm2.tokens import element_tokens


@pytest.fixture(scope="module")
def trained(tmp_path_factory, called_store):
    d = tmp_path_factory.mktemp("ctx2")
    link_inputs(d, called_store)
    result = run("pretrain", d / "el.zarr", "--arch", "glm2", "-o", d / "m", "--preset", "tiny", "--context", "512",
                 "--max-steps", "2", "--batch-size", "4", "--val-fraction", "0.2", "-q")
    assert result.exit_code == 0, result.stderr
    return d


def naive_embeddings(model, store_path: str, context: int, layer: int | None = None):
    """Element embeddings computed contig by contig, chunk by chunk, each chunk alone through the model, written
    from the chunking rule (whole elements after <cls>; one too long for a chunk alone cut into pieces)."""
    store = ElementStore(store_path)
    batch = store.read()
    e, offsets = batch.elements, batch.offsets
    out, contigs = {}, {}
    for c in range(batch.n_contigs):
        rows = list(range(int(offsets[c]), int(offsets[c + 1])))
        chunks, current = [], [[0], []]  # (tokens, [(element row, start, length)])

        def close():
            if len(current[0]) > 1:
                chunks.append((list(current[0]), list(current[1])))
            current[0][:], current[1][:] = [0], []

        for i in rows:
            cds_ = e["type"][i] == CDS
            t = element_tokens(e["aa"][i] if cds_ else e["nt"][i], int(e["strand"][i]), cds_).tolist()
            if 1 + len(t) > context:
                close()
                for s in range(1, len(t), context - 2):
                    body = t[s:s + context - 2]
                    chunks.append(([0, t[0], *body], [(i, 2, len(body))]))
                continue
            if len(current[0]) + len(t) > context:
                close()
            current[1].append((i, len(current[0]) + 1, len(t) - 1))
            current[0].extend(t)
        close()
        sums = {}
        for tokens, spans in chunks:
            x = torch.tensor([tokens])
            with torch.no_grad():
                hidden = model.encode(x, torch.ones_like(x), layers=layer)[0].double()
            for i, s, n in spans:
                total, count = sums.get(i, (0, 0))
                sums[i] = (total + hidden[s:s + n].sum(0), count + n)
        for i in rows:
            out[str(e["id"][i])] = (sums[i][0] / sums[i][1]).numpy()
        contigs[str(batch.contigs["name"][c])] = np.mean([out[str(e["id"][i])] for i in rows], 0)
    return out, contigs


def _check_against_naive(path, model, elements, context, layer=None):
    g = zarr.open_group(str(path))
    expected, contig_expected = naive_embeddings(model, str(elements), context, layer)
    for part in ("genes", "intergenic"):
        ids, emb = g[f"{part}/id"][:], g[f"{part}/embedding"][:]
        assert len(ids) > 10
        for i, v in zip(ids, emb):
            np.testing.assert_allclose(v, expected[str(i)], atol=1e-5, rtol=1e-4)
    names = g["contigs/name"][:]
    assert len(names) == len(contig_expected)
    for name, v in zip(names, g["contigs/embedding"][:]):
        np.testing.assert_allclose(v, contig_expected[str(name)], atol=1e-5, rtol=1e-4)
    assert g["genes/id"].shape[0] + g["intergenic/id"].shape[0] == ElementStore(str(elements)).n_elements


def test_embeddings_equal_a_naive_per_chunk_computation(trained, tmp_path):
    from glmkit.models.glm2.weights import load_glm2

    d = trained
    result = run("contextualize", d / "el.zarr", "-m", d / "m", "-o", tmp_path / "c.zarr", "--context", "512",
                 "--batch-size", "3", "-q")
    assert result.exit_code == 0, result.stderr
    model = load_glm2(d / "m").model
    _check_against_naive(tmp_path / "c.zarr", model, d / "el.zarr", 512)
    assert run("validate", tmp_path / "c.zarr", "-q").exit_code == 0
    g = zarr.open_group(str(tmp_path / "c.zarr"))
    assert g.attrs["model"]["architecture"] == "gLM2"
    # an earlier layer
    assert run("contextualize", d / "el.zarr", "-m", d / "m", "-o", tmp_path / "l1.zarr", "--context", "512",
               "--layer", "1", "-q").exit_code == 0
    _check_against_naive(tmp_path / "l1.zarr", model, d / "el.zarr", 512, layer=1)


def test_published_folders_run_too(trained, tmp_path):
    from glmkit.models.glm2.weights import load_glm2

    folder = tmp_path / "published"
    published_glm2_folder(folder, GLM2Config(dim=24, depth=2, heads=4, swiglu_multiple_of=16))
    result = run("contextualize", trained / "el.zarr", "-m", folder, "-o", tmp_path / "c.zarr", "--context", "300",
                 "-q")
    assert result.exit_code == 0, result.stderr
    _check_against_naive(tmp_path / "c.zarr", load_glm2(folder).model, trained / "el.zarr", 300)


def test_resume_after_a_crash_equals_an_uninterrupted_run(trained, tmp_path, monkeypatch):
    import glmkit.commands.contextualize as ctx
    import glmkit.models.glm2.context as ctx2

    monkeypatch.setattr(ctx2, "GROUP_CHUNKS", 40)
    args = ([str(trained / "el.zarr")], None, str(trained / "m"))
    options = ctx.ContextOptions(context=512, threads=1)
    ctx.run_contextualize(*args, str(tmp_path / "whole.zarr"), options)
    real, calls = ctx2.Job.group, []

    def crash_on_third(self, *a):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        return real(self, *a)

    monkeypatch.setattr(ctx2.Job, "group", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        ctx.run_contextualize(*args, str(tmp_path / "resumed.zarr"), options)
    assert len(list((tmp_path / ".resumed.zarr.work").glob("group-*.npz"))) == 2
    computed = []
    monkeypatch.setattr(ctx2.Job, "group", lambda self, *a: computed.append(1) or real(self, *a))
    ctx.run_contextualize(*args, str(tmp_path / "resumed.zarr"), options)
    whole, resumed = zarr.open_group(str(tmp_path / "whole.zarr")), zarr.open_group(str(tmp_path / "resumed.zarr"))
    assert len(computed) >= 1
    for name in ("genes/embedding", "intergenic/embedding", "contigs/embedding", "genes/id", "intergenic/contig"):
        np.testing.assert_array_equal(whole[name][:], resumed[name][:])


def test_options_of_the_other_model_are_refused(trained, tmp_path, esm_checkpoint):
    d = trained
    assert_one_line_error(run("contextualize", d / "el.zarr", "-m", d / "m", "-o", tmp_path / "a.zarr",
                              "--attention"), "--attention is an option of gLM models, not of gLM2", status=2)
    assert_one_line_error(run("contextualize", d / "el.zarr", "-m", d / "m", "-o", tmp_path / "a.zarr",
                              "-e", d / "el.zarr"), "--embeddings is for gLM models", status=2)
    assert not (tmp_path / "a.zarr").exists()
