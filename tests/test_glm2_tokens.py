"""glmkit.models.glm2.tokens: the ids the published gLM2 tokenizer gives each element and chunk, written out by
hand; the tokenisation of glmkit checkpoints from before the record (<cls>, X)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import published_tokenizer_ids, readme_text
from glmkit.errors import GlmkitError
from glmkit.models.glm2.corpus import chunk_contig
from glmkit.models.glm2.tokens import (LEGACY, PUBLISHED, VOCAB, Tokenisation, decode, element_tokens,
                                       tokenisation_of)

# The published tokenizer on these texts (its vocabulary: ../shared/DESIGN.md; <+> 33, <-> 34, <unk> 3, L 4 ... C 23,
# X 24 ... O 28, a 29, t 30, c 31, g 32): no <cls> before, no <eos> after, one id per character, <unk> for the
# characters it has no token for. Written out by hand, not computed.
PUBLISHED_IDS = {
    "<+>MKV<->aatg": [33, 20, 15, 7, 34, 29, 29, 30, 32],
    "<->MLGKVAWSTE": [34, 20, 4, 6, 15, 7, 5, 22, 8, 11, 9],
    "<+>acgtn": [33, 29, 31, 32, 30, 3],
    "<+>MJ*V": [33, 20, 3, 3, 7],
    "<+>XBUZO": [33, 24, 25, 26, 27, 28],
    "<+>mka": [33, 3, 3, 29],                # lower-case letters are nucleotides or nothing to it
    "<+>MKV<->aatg<+>MJ*": [33, 20, 15, 7, 34, 29, 29, 30, 32, 33, 20, 3, 3],   # docs/commands/contextualize.md
}


def test_the_reference_tokenizer_of_the_tests_gives_the_ids_written_out():
    for text, ids in PUBLISHED_IDS.items():
        assert published_tokenizer_ids(text) == ids, text


@pytest.mark.parametrize("sequence,strand,is_cds,text", [
    (b"MKV", 1, True, "<+>MKV"),
    (b"AATG", -1, False, "<->aatg"),
    (b"MLGKVAWSTE", -1, True, "<->MLGKVAWSTE"),
    (b"ACGTN", 0, False, "<+>acgtn"),             # an intergenic region: forward strand, lower case, N as <unk>
    (b"MJ*V", 1, True, "<+>MJ*V"),                # letters outside the vocabulary: <unk>, as the tokenizer reads them
    (b"XBUZO", 1, True, "<+>XBUZO"),
])
def test_elements_get_the_published_tokenizers_ids(sequence, strand, is_cds, text):
    assert readme_text(sequence, strand, is_cds) == text
    assert element_tokens(sequence, strand, is_cds).tolist() == published_tokenizer_ids(text)
    assert element_tokens(sequence, strand, is_cds, PUBLISHED).tolist() == published_tokenizer_ids(text)


def test_a_lower_case_protein_is_read_as_its_readme_text_on_purpose():
    """The README asks for proteins in upper case; a store's lower-case protein is that protein, not the
    nucleotides and <unk>s the tokenizer would make of the raw letters (docs/commands/contextualize.md)."""
    assert element_tokens(b"mka", 1, True).tolist() == published_tokenizer_ids("<+>MKA") == [33, 20, 15, 5]
    assert published_tokenizer_ids("<+>mka") != published_tokenizer_ids("<+>MKA")


def test_chunks_and_an_element_cut_into_pieces_get_the_published_ids():
    """Whole elements while they fit, no <cls>; an element too long for a chunk is cut, each piece the text of an
    element of its own (its strand token, then the piece): the ids written out."""
    elements = [element_tokens(*e) for e in ((b"MKV", 1, True), (b"AATG", -1, False),
                                             (b"MLGKVAWSTE", -1, True), (b"MW", 1, True))]
    chunks, pieces = chunk_contig(elements, 8)
    assert [c.tolist() for c in chunks] == [[33, 20, 15, 7],                   # <+>MKV (with <->aatg: 9 > 8)
                                            [34, 29, 29, 30, 32],              # <->aatg
                                            [34, 20, 4, 6, 15, 7, 5, 22],      # <->MLGKVAW, the first piece
                                            [34, 8, 11, 9],                    # <->STE, the second
                                            [33, 20, 22]]                      # <+>MW
    assert pieces[2] == [(2, 1, 7), (3, 1, 3)] and pieces[3] == [(4, 1, 2)]
    assert published_tokenizer_ids("<->MLGKVAW") == chunks[2].tolist()
    # glmkit checkpoints from before the record: <cls> first, pieces one residue shorter
    legacy, _ = chunk_contig([element_tokens(b"MLGKVAWSTE", -1, True, LEGACY)], 8, cls=True)
    assert [decode(c) for c in legacy] == ["<cls><->MLGKVA", "<cls><->WSTE"]


def test_old_checkpoints_keep_their_tokenisation():
    assert decode(element_tokens(b"MJ*", -1, True, LEGACY)) == "<->MXX"    # unknown letters (and lower case): X
    assert decode(element_tokens(b"mk", 1, True, LEGACY)) == "<+>XX"
    assert decode(element_tokens(b"ACGTN", 0, False, LEGACY)) == "<+>acgt<unk>"
    assert tokenisation_of(None, "x") == LEGACY
    assert tokenisation_of(PUBLISHED.record(), "x") == PUBLISHED and tokenisation_of(LEGACY.record(), "x") == LEGACY
    with pytest.raises(GlmkitError, match="config.json: gLM2 tokens record"):
        tokenisation_of({"cls": True, "unknown_protein": "<unk>"}, "config.json")
    assert Tokenisation(cls=False, unknown_protein="<unk>") == PUBLISHED


def test_the_vocabulary_is_the_published_order():
    assert len(VOCAB) == 37 and VOCAB[0] == "<cls>" and VOCAB[36] == "<sep>" and VOCAB.index("<+>") == 33
    assert np.all(element_tokens(b"", 1, False) == [33])
