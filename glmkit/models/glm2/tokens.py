"""gLM2's vocabulary and how elements become tokens.

Ids 0-36 in the published order (../shared/DESIGN.md). An element is its
strand token then its residues: a CDS's translation in upper case (any of
ESM's 25 letters, X for unknown), an intergenic region's nucleotides in lower
case on the forward strand, with anything but a/c/g/t (N, IUPAC codes) as
`<unk>`. A contig is `<cls>` followed by its elements.
"""

from __future__ import annotations

import numpy as np

VOCAB = ("<cls>", "<pad>", "<eos>", "<unk>", "L", "A", "G", "V", "S", "E", "R", "T", "I", "D", "P", "K", "Q", "N",
         "F", "Y", "M", "H", "W", "C", "X", "B", "U", "Z", "O", "a", "t", "c", "g", "<+>", "<->", "<mask>", "<sep>")
ID = {token: i for i, token in enumerate(VOCAB)}
CLS, PAD, EOS, UNK, PLUS, MINUS, MASK, SEP = (ID[t] for t in ("<cls>", "<pad>", "<eos>", "<unk>", "<+>", "<->",
                                                             "<mask>", "<sep>"))
AMINO_ACIDS = np.arange(ID["L"], ID["O"] + 1)      # ids of residue tokens of proteins
NUCLEOTIDES = np.arange(ID["a"], ID["g"] + 1)      # ... and of DNA

_PROTEIN = np.full(256, ID["X"], np.int64)          # byte -> id; unknown protein letters read as X
for _letter in VOCAB[ID["L"]:ID["O"] + 1]:
    _PROTEIN[ord(_letter)] = ID[_letter]
_DNA = np.full(256, UNK, np.int64)
for _letter in "atcg":
    _DNA[ord(_letter)] = _DNA[ord(_letter.upper())] = ID[_letter]


def element_tokens(residues: bytes, strand: int, is_cds: bool) -> np.ndarray:
    """The element's tokens: strand token, then its residues."""
    table = _PROTEIN if is_cds else _DNA
    body = table[np.frombuffer(residues, np.uint8)] if residues else np.zeros(0, np.int64)
    return np.concatenate([[PLUS if strand >= 0 else MINUS], body])


def decode(ids) -> str:
    return "".join(VOCAB[int(i)] for i in ids)
