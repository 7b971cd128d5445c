"""glmkit.models.glm2.corpus: tokens of element stores, chunks at element boundaries, the token corpus store, masks."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import build_store, cds, igs, run
from glmkit.data.stream import table_rows
from glmkit.errors import GlmkitError
from glmkit.models.glm2.corpus import (AA_IDS, NT_IDS, TokenReader, build_token_corpus, chunk_contig, mask_tokens,
                              training_token_counts, unigram_log_probs)
from glmkit.data.split import Split
from glmkit.io.token_corpus import TokenCorpusStore
from glmkit.models.glm2.tokens import CLS, ID, LEGACY, MASK, MINUS, PLUS, PUBLISHED, UNK, decode, element_tokens


def naive_chunks(elements: list[str], context: int, cls: bool) -> list[str]:
    """The rule, written out on strings: ('<cls>', with ``cls``, then) whole elements while they fit; an element
    that cannot fit even alone is cut into pieces, each ('<cls>' +) its strand token + the piece."""
    opening = "<cls>" if cls else ""
    room = context - cls - 1
    out, current, used = [], opening, int(cls)
    for text in elements:
        strand, body = text[:3], text[3:]
        n = 1 + len(body)
        if cls + n > context:
            if used > cls:
                out.append(current)
            current, used = opening, int(cls)
            out += [opening + strand + body[s:s + room] for s in range(0, len(body), room)]
            continue
        if used + n > context:
            out.append(current)
            current, used = opening, int(cls)
        current += text
        used += n
    return out + ([current] if used > cls else [])


@pytest.mark.parametrize("tokens", [PUBLISHED, LEGACY])
@pytest.mark.parametrize("context", [3, 8, 16, 40, 4096])
def test_chunks_are_cut_at_element_boundaries_as_the_rule_says(context, tokens):
    rng = np.random.default_rng(context)
    letters = "LAGVSERTIDPKQNFYMHWC"
    texts, arrays = [], []
    for k in range(30):
        cds_ = k % 2 == 0
        n = int(rng.integers(0, 45))
        body = "".join(rng.choice(list(letters if cds_ else "acgt"), n))
        strand = 1 if rng.random() < 0.5 or not cds_ else -1
        arrays.append(element_tokens(body.encode() if cds_ else body.upper().encode(), strand, cds_, tokens))
        texts.append(("<+>" if strand > 0 else "<->") + body)
    chunks, pieces = chunk_contig(arrays, context, tokens.cls)
    assert [decode(c) for c in chunks] == naive_chunks(texts, context, tokens.cls)
    assert max(len(c) for c in chunks) <= context
    assert all((c[0] == CLS) == tokens.cls for c in chunks) and all(CLS not in c[1:] for c in chunks)
    # each element's pieces point at its residues, in order
    for text, mine in zip(texts, pieces):
        residues = "".join(decode(chunks[c][s:s + n]) for c, s, n in mine)
        assert residues == text[3:]
        assert all(chunks[c][s - 1] in (PLUS, MINUS) for c, s, n in mine)


def test_token_corpus_store(tmp_path):
    store = build_store(tmp_path / "el.zarr", [
        ("c1", 900, [cds(aa=b"MKV"), igs(nt=b"ACGTN"), cds(aa=b"MAAAAAAAAAAAA", strand=-1), cds(aa=b"MW")]),
        ("c2", 100, [igs(nt=b"AC")]),
    ])
    corpus = build_token_corpus([str(store)], tmp_path / "t.zarr", context=11)
    assert TokenCorpusStore(tmp_path / "t.zarr").n_chunks == corpus.n_chunks
    starts, lengths = corpus.array("chunks/start")[:], corpus.array("chunks/length")[:]
    tokens = corpus.tokens(0, corpus.n_tokens)
    chunks = [decode(tokens[s:s + n]) for s, n in zip(starts, lengths)]
    # the 13-residue protein cannot fit a chunk of 11: two pieces, each a chunk of its own
    assert chunks == ["<+>MKV<+>acgt<unk>", "<->MAAAAAAAAA", "<->AAA", "<+>MW", "<+>ac"]
    assert corpus.attrs["parameters"]["tokens"] == PUBLISHED.record()
    legacy = build_token_corpus([str(store)], tmp_path / "legacy.zarr", context=12, tokenisation=LEGACY)
    assert "tokens" not in legacy.attrs["parameters"]   # as stores from before the record: still reused
    assert decode(legacy.tokens(0, 11)) == "<cls><+>MKV<+>acgt<unk>"
    assert corpus.array("contigs/offsets")[:].tolist() == [0, 4, 5]
    assert corpus.array("chunks/contig")[:].tolist() == [0, 0, 0, 0, 1]
    assert corpus.array("contigs/elements")[:].tolist() == [0, 4, 5]
    assert corpus.array("elements/id")[:].tolist() == ["c1_1", "c1_igs1", "c1_2", "c1_3", "c2_igs0"]
    pieces = corpus.array("elements/pieces")[:]
    p_start, p_len = corpus.array("pieces/start")[:], corpus.array("pieces/length")[:]
    residues = ["".join(decode(tokens[p_start[p]:p_start[p] + p_len[p]]) for p in range(pieces[e], pieces[e + 1]))
                for e in range(corpus.n_elements)]
    assert residues == ["MKV", "acgt<unk>", "MAAAAAAAAAAAA", "MW", "ac"]
    counts = corpus.array("contigs/token_counts")[:]
    assert counts[1].tolist() == np.bincount(tokens[starts[4]:starts[4] + lengths[4]], minlength=37).tolist()
    assert counts.sum() == corpus.n_tokens and corpus.attrs["summary"]["elements_cut"] == 1
    assert run("validate", tmp_path / "t.zarr", "-q").exit_code == 0
    # the reader, through a cache smaller than the data, reads what the array holds
    reader = TokenReader(corpus, cache_chunks=1, chunk=5)
    for s, n in zip(starts, lengths):
        assert reader.tokens(int(s), int(n)).tolist() == tokens[s:s + n].tolist()
    # the unigram baseline counts the training split's contigs only
    assert training_token_counts(corpus, Split(0, 0.0)).tolist() == counts.sum(0).tolist()
    assert not training_token_counts(corpus, Split(0, 1.01)).any()
    keys = corpus.array("contigs/key")[:]
    for seed in range(20):  # a split that holds out exactly one of the two contigs
        held = Split(seed, 0.5).validation(keys)
        if held.sum() == 1:
            assert training_token_counts(corpus, Split(seed, 0.5)).tolist() == counts[~held].sum(0).tolist()
            break
    else:
        pytest.fail("no seed held out exactly one contig")


def test_an_empty_store_is_refused(tmp_path):
    store = build_store(tmp_path / "el.zarr", [("c1", 10, [])])
    with pytest.raises(GlmkitError, match="no elements to tokenise"):
        build_token_corpus([str(store)], tmp_path / "t.zarr", context=64)


def test_masks_choose_residues_only_at_the_rate_and_80_10_10():
    rng = np.random.default_rng(0)
    protein = rng.integers(ID["L"], ID["C"] + 1, 200_000)
    dna = rng.integers(ID["a"], ID["g"] + 1, 200_000)
    tokens = np.concatenate([[CLS, PLUS], protein, [MINUS, UNK], dna, [ID["<pad>"]] * 100])
    inputs, chosen = mask_tokens(tokens, np.random.default_rng(1), 0.3)
    residue = AA_IDS[tokens] | NT_IDS[tokens]
    assert not chosen[~residue].any() and (inputs[~residue] == tokens[~residue]).all()
    assert chosen[residue].mean() == pytest.approx(0.3, abs=0.005)
    masked, kept = inputs[chosen] == MASK, inputs[chosen] == tokens[chosen]
    assert masked.mean() == pytest.approx(0.8, abs=0.005)
    swapped = ~masked & ~kept
    # random replacements come from the token's own modality; about 1 in 20 (1 in 4 for DNA) draws itself
    assert (AA_IDS[inputs[chosen][swapped]] == AA_IDS[tokens[chosen][swapped]]).all()
    assert kept.mean() == pytest.approx(0.1 + 0.1 * (0.5 / 20 + 0.5 / 4), abs=0.005)
    assert not (inputs[~chosen] != tokens[~chosen]).any()
    clean, chosen2 = mask_tokens(tokens, np.random.default_rng(1), 0.3, corrupt=False)
    assert (clean[chosen2] == MASK).all() and (chosen2 == chosen).all()


def test_unigram_is_per_modality_with_add_one():
    counts = np.zeros(37, np.int64)
    counts[ID["L"]], counts[ID["a"]], counts[ID["c"]] = 8, 3, 1
    logp = unigram_log_probs(counts)
    assert np.exp(logp[AA_IDS]).sum() == pytest.approx(1) and np.exp(logp[NT_IDS]).sum() == pytest.approx(1)
    assert np.exp(logp[ID["a"]]) == pytest.approx(4 / 8) and np.exp(logp[ID["L"]]) == pytest.approx(9 / 33)


def test_table_rows_reads_far_apart_items():
    class Counting:
        def __init__(self, a):
            self.a, self.dtype, self.read = a, a.dtype, 0

        def __getitem__(self, s):
            self.read += s.stop - s.start
            return self.a[s]

    array = Counting(np.arange(10_000_000) * 3)
    items = np.array([9_999_990, 5, 9_999_991, 7, 6])
    assert table_rows(array, items).tolist() == (items * 3).tolist()
    assert array.read < 100  # two short reads, not the 10 million rows between
