"""ESM2's tokens: fair-esm's "ESM-1b" alphabet and its batch converter's layout."""

from __future__ import annotations

import numpy as np
import torch

# fair-esm's "ESM-1b" alphabet, which every ESM2 uses: ids 0-32 in this order.
ALPHABET = ("<cls>", "<pad>", "<eos>", "<unk>", "L", "A", "G", "V", "S", "E", "R", "T", "I", "D", "P", "K", "Q",
            "N", "F", "Y", "M", "H", "W", "C", "X", "B", "U", "Z", "O", ".", "-", "<null_1>", "<mask>")
CLS, PAD, EOS, UNK, MASK = 0, 1, 2, 3, 32
# byte -> token id; amino-acid letters only (the FASTA reader has upper-cased and validated them)
TOKEN_OF_BYTE = np.full(256, UNK, dtype=np.int64)
for _i, _tok in enumerate(ALPHABET):
    if len(_tok) == 1:
        TOKEN_OF_BYTE[ord(_tok)] = _i


def tokenize(sequences: list[bytes], max_residues: int) -> torch.Tensor:
    """<cls> residues[:max_residues] <eos>, padded: what fair-esm's BatchConverter produces. (B, T) int64."""
    width = min(max(len(s) for s in sequences), max_residues) + 2
    tokens = np.full((len(sequences), width), PAD, dtype=np.int64)
    tokens[:, 0] = CLS
    for i, s in enumerate(sequences):
        n = min(len(s), max_residues)
        tokens[i, 1:n + 1] = TOKEN_OF_BYTE[np.frombuffer(s, dtype=np.uint8, count=n)]
        tokens[i, n + 1] = EOS
    return torch.from_numpy(tokens)
