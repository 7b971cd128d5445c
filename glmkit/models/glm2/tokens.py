"""gLM2's vocabulary and how elements and chunks become tokens.

Ids 0-36 in the published order (../shared/DESIGN.md). The published tokenizer
(tattabio/gLM2_650M) reads text such as `<+>MKV<->aatg` one character at a
time, `<+>`/`<->`/`<mask>`... whole, anything outside its vocabulary as `<unk>`,
and adds nothing: no `<cls>`, no `<eos>`. glmkit writes an element as its
README asks (the strand token, then a CDS's translation in upper case or an
intergenic region's forward-strand nucleotides in lower case) and gives it the
ids that tokenizer gives that text: `<+> M K V` is 33 20 15 7, `<-> a a t g`
is 34 29 29 30 32, J, `*` or N are `<unk>` (3).

A model runs with the tokenisation it was trained with (`Tokenisation`): the
published folders, and glmkit checkpoints that record it, as above; glmkit
checkpoints from before the record existed opened each chunk with `<cls>` and
read unknown protein letters (lower case included) as X.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

VOCAB = ("<cls>", "<pad>", "<eos>", "<unk>", "L", "A", "G", "V", "S", "E", "R", "T", "I", "D", "P", "K", "Q", "N",
         "F", "Y", "M", "H", "W", "C", "X", "B", "U", "Z", "O", "a", "t", "c", "g", "<+>", "<->", "<mask>", "<sep>")
ID = {token: i for i, token in enumerate(VOCAB)}
CLS, PAD, EOS, UNK, PLUS, MINUS, MASK, SEP = (ID[t] for t in ("<cls>", "<pad>", "<eos>", "<unk>", "<+>", "<->",
                                                             "<mask>", "<sep>"))
AMINO_ACIDS = np.arange(ID["L"], ID["O"] + 1)      # ids of residue tokens of proteins
NUCLEOTIDES = np.arange(ID["a"], ID["g"] + 1)      # ... and of DNA


@dataclass(frozen=True)
class Tokenisation:
    """How a model's chunks become ids: as it was trained, so as it must be run."""
    cls: bool              # a <cls> opens every chunk
    unknown_protein: str   # a protein letter outside the vocabulary: "<unk>" (the published tokenizer) or "X"

    def record(self) -> dict:
        return {"cls": self.cls, "unknown_protein": self.unknown_protein}


PUBLISHED = Tokenisation(cls=False, unknown_protein="<unk>")   # the published tokenizer; glmkit's trainings since
LEGACY = Tokenisation(cls=True, unknown_protein="X")           # glmkit checkpoints without a "tokens" record


def tokenisation_of(record, where) -> Tokenisation:
    """A checkpoint's or corpus store's "tokens" record; none (a glmkit store or checkpoint from before the record
    existed): LEGACY."""
    from glmkit.errors import GlmkitError

    if record is None:
        return LEGACY
    try:
        found = Tokenisation(cls=record["cls"], unknown_protein=record["unknown_protein"])
    except (KeyError, TypeError):
        found = None
    if found not in (PUBLISHED, LEGACY):
        raise GlmkitError(f"{where}: gLM2 tokens record {record!r} is none this glmkit knows")
    return found


def _table(default: int, letters: str, fold_case: bool) -> np.ndarray:
    table = np.full(256, default, np.int64)          # byte -> id
    for letter in letters:
        table[ord(letter)] = ID[letter]
        if fold_case:
            table[ord(letter.swapcase())] = ID[letter]
    return table


_PROTEIN = {PUBLISHED: _table(UNK, "".join(VOCAB[ID["L"]:ID["O"] + 1]), fold_case=True),
            LEGACY: _table(ID["X"], "".join(VOCAB[ID["L"]:ID["O"] + 1]), fold_case=False)}
_DNA = _table(UNK, "atcg", fold_case=True)           # N and IUPAC codes: <unk> (the published tokenizer's 'n')


def element_tokens(residues: bytes, strand: int, is_cds: bool, tokens: Tokenisation = PUBLISHED) -> np.ndarray:
    """The element's ids: strand token, then one per residue."""
    table = _PROTEIN[tokens] if is_cds else _DNA
    body = table[np.frombuffer(residues, np.uint8)] if residues else np.zeros(0, np.int64)
    return np.concatenate([[PLUS if strand >= 0 else MINUS], body])


def decode(ids) -> str:
    return "".join(VOCAB[int(i)] for i in ids)
