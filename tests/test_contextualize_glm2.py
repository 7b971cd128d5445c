"""glmkit contextualize on gLM2 models: element and contig embeddings against a naive per-contig computation,
published folders, resume, and the options that belong to the gLM only."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr

from conftest import (assert_one_line_error, build_store, cds, host_syncs_inside, igs, link_inputs,
                      published_glm2_folder, published_tokenizer_ids, readme_text, run)
from glmkit.io.elements import CDS, ElementStore
from glmkit.models.glm2.model import GLM2Config
from glmkit.models.glm2.tokens import CLS, LEGACY, MINUS, PLUS, PUBLISHED, element_tokens


@pytest.fixture(scope="module")
def trained(tmp_path_factory, called_store):
    d = tmp_path_factory.mktemp("ctx2")
    link_inputs(d, called_store)
    result = run("pretrain", d / "el.zarr", "--arch", "glm2", "-o", d / "m", "--preset", "tiny", "--context", "512",
                 "--max-steps", "2", "--batch-size", "4", "--val-fraction", "0.2", "-q")
    assert result.exit_code == 0, result.stderr
    return d


def naive_embeddings(model, store_path: str, context: int, layer: int | None = None, tokens=PUBLISHED):
    """Element embeddings computed contig by contig, chunk by chunk, each chunk alone through the model, written
    from the chunking rule (whole elements, after <cls> with a LEGACY tokenisation; one too long for a chunk alone
    cut into pieces)."""
    store = ElementStore(store_path)
    batch = store.read()
    e, offsets = batch.elements, batch.offsets
    opening = [CLS] if tokens.cls else []
    out, contigs = {}, {}
    for c in range(batch.n_contigs):
        rows = list(range(int(offsets[c]), int(offsets[c + 1])))
        chunks, current = [], [list(opening), []]  # (tokens, [(element row, start, length)])

        def close():
            if len(current[0]) > len(opening):
                chunks.append((list(current[0]), list(current[1])))
            current[0][:], current[1][:] = opening, []

        for i in rows:
            cds_ = e["type"][i] == CDS
            t = element_tokens(e["aa"][i] if cds_ else e["nt"][i], int(e["strand"][i]), cds_, tokens).tolist()
            if len(opening) + len(t) > context:
                close()
                room = context - len(opening) - 1
                for s in range(1, len(t), room):
                    body = t[s:s + room]
                    chunks.append(([*opening, t[0], *body], [(i, len(opening) + 1, len(body))]))
                continue
            if len(current[0]) + len(t) > context:
                close()
            current[1].append((i, len(current[0]) + 1, len(t) - 1))
            current[0].extend(t)
        close()
        sums = {}
        for chunk, spans in chunks:
            x = torch.tensor([chunk])
            with torch.no_grad():
                hidden = model.encode(x, torch.ones_like(x), layers=layer)[0].double()
            for i, s, n in spans:
                total, count = sums.get(i, (0, 0))
                sums[i] = (total + hidden[s:s + n].sum(0), count + n)
        for i in rows:
            out[str(e["id"][i])] = (sums[i][0] / sums[i][1]).numpy()
        contigs[str(batch.contigs["name"][c])] = np.mean([out[str(e["id"][i])] for i in rows], 0)
    return out, contigs


def _check_against_naive(path, model, elements, context, layer=None, tokens=PUBLISHED):
    g = zarr.open_group(str(path))
    expected, contig_expected = naive_embeddings(model, str(elements), context, layer, tokens)
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


def readme_usage(model, chunk_texts: list[str]) -> list[tuple[np.ndarray, list[list[int]]]]:
    """gLM2's README usage on each text: the published tokenizer's ids (conftest.published_tokenizer_ids), the
    model's last hidden state; with, per element of the text, the positions of its residue tokens."""
    found = []
    for text in chunk_texts:
        ids = published_tokenizer_ids(text)
        x = torch.tensor([ids])
        with torch.no_grad():
            hidden = model.encode(x, torch.ones_like(x))[0].double().numpy()
        spans, strands = [], [k for k, t in enumerate(ids) if t in (PLUS, MINUS)] + [len(ids)]
        for a, b in zip(strands[:-1], strands[1:]):
            spans.append(list(range(a + 1, b)))
        found.append((hidden, spans))
    return found


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


def test_a_batch_makes_the_host_wait_for_nothing(trained, tmp_path, monkeypatch):
    from glmkit.models.glm2.model import GLM2

    with host_syncs_inside(monkeypatch, (GLM2, "encode")) as found:
        r = run("contextualize", trained / "el.zarr", "-m", trained / "m", "-o", tmp_path / "c.zarr", "--context",
                "512", "--batch-size", "2", "-q")
    assert r.exit_code == 0, r.stderr
    assert found["calls"] >= 2 and found["syncs"] == []


def test_published_folders_run_too(trained, tmp_path):
    from glmkit.models.glm2.weights import load_glm2

    folder = tmp_path / "published"
    published_glm2_folder(folder, GLM2Config(dim=24, depth=2, heads=4, swiglu_multiple_of=16))
    result = run("contextualize", trained / "el.zarr", "-m", folder, "-o", tmp_path / "c.zarr", "--context", "300",
                 "-q")
    assert result.exit_code == 0, result.stderr
    _check_against_naive(tmp_path / "c.zarr", load_glm2(folder).model, trained / "el.zarr", 300)


MIXED_CONTIGS = [
    ("c1", 900, [cds(aa=b"MKVLAGWSTEQRKLLAG"), igs(nt=b"ACGTNAAT"), cds(aa=b"MJ*KV", strand=-1),
                 cds(aa=b"mkaWXB", strand=-1), igs(nt=b"ttgacaNN"), cds(aa=b"MW")]),
    ("c2", 300, [cds(aa=b"MSTNPK", strand=-1), igs(nt=b"GGGTTA"), cds(aa=b"MKRLUZO")]),
]


def test_a_published_folder_gives_its_readme_usage_embeddings(tmp_path):
    """On a published folder each contig (here one chunk) has the ids the published tokenizer gives its README
    text (no <cls>; J, *, N as <unk>; a lower-case protein read as upper case): each element's embedding is the
    mean of the model's last hidden state over its residue tokens, to 1e-5."""
    from glmkit.models.glm2.weights import load_glm2

    folder = tmp_path / "published"
    published_glm2_folder(folder, GLM2Config(dim=24, depth=2, heads=4, swiglu_multiple_of=16))
    store = build_store(tmp_path / "el.zarr", MIXED_CONTIGS)
    result = run("contextualize", store, "-m", folder, "-o", tmp_path / "c.zarr", "-q")   # --context 4096
    assert result.exit_code == 0, result.stderr
    g = zarr.open_group(str(tmp_path / "c.zarr"))
    ours = {**dict(zip(g["genes/id"][:], g["genes/embedding"][:])),
            **dict(zip(g["intergenic/id"][:], g["intergenic/embedding"][:]))}
    batch = ElementStore(str(store)).read()
    e, model = batch.elements, load_glm2(folder).model
    for c, (name, _, elements) in enumerate(MIXED_CONTIGS):
        rows = range(int(batch.offsets[c]), int(batch.offsets[c + 1]))
        text = "".join(readme_text(e["aa"][i] if e["type"][i] == CDS else e["nt"][i], int(e["strand"][i]),
                                   bool(e["type"][i] == CDS)) for i in rows)
        [(hidden, spans)] = readme_usage(model, [text])
        assert len(spans) == len(rows)
        for i, span in zip(rows, spans):
            np.testing.assert_allclose(ours[e["id"][i]], hidden[span].mean(0), atol=1e-5, rtol=0)
    assert g.attrs["model"]["tokens"] == {"cls": False, "unknown_protein": "<unk>"}


def test_an_element_longer_than_a_chunk_is_cut_into_pieces_each_its_own_text(tmp_path):
    """The published usage has no rule for an element longer than the context (its tokenizer does not truncate:
    the README's call would run it whole, with --context large enough glmkit does too). Cut at --context, each
    piece is the text of an element of its own, its strand token then the piece; the element's embedding is the
    mean over all its pieces' residue tokens."""
    from glmkit.models.glm2.weights import load_glm2

    folder = tmp_path / "published"
    published_glm2_folder(folder, GLM2Config(dim=24, depth=2, heads=4, swiglu_multiple_of=16))
    store = build_store(tmp_path / "el.zarr", [("c1", 90, [cds(aa=b"MKVLAGWSTEQR"), igs(nt=b"ACGTNA"),
                                                           cds(aa=b"MJ*K", strand=-1)])])
    chunk_texts = ["<+>MKVLAGW", "<+>STEQR", "<+>acgtna", "<->MJ*K"]   # --context 8, written out
    model = load_glm2(folder).model
    (h1, [s1]), (h2, [s2]), (h3, [s3]), (h4, [s4]) = readme_usage(model, chunk_texts)
    expected = {"c1_1": np.concatenate([h1[s1], h2[s2]]).mean(0), "c1_igs1": h3[s3].mean(0), "c1_2": h4[s4].mean(0)}
    for context, pieces in (("8", expected), ("4096", None)):
        out = tmp_path / f"c{context}.zarr"
        assert run("contextualize", store, "-m", folder, "-o", out, "--context", context, "-q").exit_code == 0
        g = zarr.open_group(str(out))
        ours = {**dict(zip(g["genes/id"][:], g["genes/embedding"][:])),
                **dict(zip(g["intergenic/id"][:], g["intergenic/embedding"][:]))}
        if pieces is None:   # whole: the README's call on the contig's text
            [(hidden, spans)] = readme_usage(model, ["<+>MKVLAGWSTEQR<+>acgtna<->MJ*K"])
            pieces = {k: hidden[span].mean(0) for k, span in zip(("c1_1", "c1_igs1", "c1_2"), spans)}
        for k, v in pieces.items():
            np.testing.assert_allclose(ours[k], v, atol=1e-5, rtol=0)
    assert not np.allclose(expected["c1_1"], pieces["c1_1"], atol=1e-3)   # cutting changes the embedding


def test_checkpoints_run_as_they_were_trained(trained, tmp_path):
    """New trainings record the published tokenisation and run without <cls>; a checkpoint from before the
    record (config.json without "tokens") keeps being run with the leading <cls> it was trained with."""
    import json
    import shutil

    from glmkit.models.glm2.weights import load_glm2

    meta = json.loads((trained / "m" / "checkpoint" / "config.json").read_text())
    assert meta["tokens"] == {"cls": False, "unknown_protein": "<unk>"} == meta["corpus"]["tokens"]
    old = tmp_path / "old"
    shutil.copytree(trained / "m" / "checkpoint", old)
    del meta["tokens"], meta["corpus"]["tokens"]
    (old / "config.json").write_text(json.dumps(meta))
    assert load_glm2(old).tokens == LEGACY and load_glm2(trained / "m").tokens == PUBLISHED
    for model, tokens in ((trained / "m", PUBLISHED), (old, LEGACY)):
        out = tmp_path / f"{model.name}.zarr"
        assert run("contextualize", trained / "el.zarr", "-m", model, "-o", out, "--context", "512", "-q",
                   "--threads", "1").exit_code == 0
        _check_against_naive(out, load_glm2(model).model, trained / "el.zarr", 512, tokens=tokens)
    new, legacy = (zarr.open_group(str(tmp_path / f"{n}.zarr"))["genes/embedding"][:] for n in ("m", "old"))
    assert np.abs(new - legacy).max() > 1e-3   # the <cls> matters


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
