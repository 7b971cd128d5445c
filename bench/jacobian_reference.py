#!/usr/bin/env python3
"""The categorical Jacobian as the published notebooks compute it (sokrypton's ESM notebook, which the gLM2
notebook adapts), transcribed for the benchmark: fair-esm's model, one position at a time, the 20 amino-acid
mutants of that position in one batch, the whole L x 20 x L x 20 tensor kept in memory, then centred on its 4
axes, symmetrised, normed, APC.

    python bench/jacobian_reference.py MODEL.pt FASTA OUT.npy [THREADS] [POSITIONS]

POSITIONS (default: all) mutates only the first POSITIONS positions but allocates and post-processes the whole
tensor as for all of them: the reference's peak memory on an input too long to wait for.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

AMINO = "LAGVSERTIDPKQNFYMHWC"


def load(path):
    import argparse

    import esm

    with torch.serialization.safe_globals([argparse.Namespace]):
        data = torch.load(path, map_location="cpu", weights_only=True)
    args = data["cfg"]["model"]
    alphabet = esm.data.Alphabet.from_architecture("ESM-1b")
    model = esm.model.esm2.ESM2(num_layers=args.encoder_layers, embed_dim=args.encoder_embed_dim,
                                attention_heads=args.encoder_attention_heads, alphabet=alphabet,
                                token_dropout=args.token_dropout)
    model.load_state_dict({k.removeprefix("encoder.sentence_encoder."): v for k, v in data["model"].items()})
    return model.eval(), alphabet


def categorical_jacobian(model, alphabet, sequence: str, positions: int | None = None) -> np.ndarray:
    aa = [alphabet.get_idx(a) for a in AMINO]
    x = torch.tensor([[alphabet.cls_idx] + [alphabet.get_idx(c) for c in sequence] + [alphabet.eos_idx]])
    L = len(sequence)
    with torch.no_grad():
        f = lambda t: model(t)["logits"][:, 1:-1, aa].float()  # noqa: E731
        fx = f(x)[0]
        x = torch.tile(x, [20, 1])
        fx_h = torch.zeros((L, 20, L, 20), dtype=torch.float32)
        for n in range(L if positions is None else positions):  # each position: its 20 mutants in one batch
            x_h = torch.clone(x)
            x_h[:, n + 1] = torch.tensor(aa)
            fx_h[n] = f(x_h)
        jac = (fx_h - fx).numpy()
    for i in range(4):
        jac -= jac.mean(i, keepdims=True)
    jac = (jac + jac.transpose(2, 3, 0, 1)) / 2
    contacts = np.sqrt(np.square(jac).sum((1, 3)))
    np.fill_diagonal(contacts, 0)
    contacts -= contacts.sum(0, keepdims=True) * contacts.sum(1, keepdims=True) / contacts.sum()
    np.fill_diagonal(contacts, 0)
    return contacts


def main() -> int:
    model_path, fasta, out = sys.argv[1:4]
    torch.set_num_threads(int(sys.argv[4]) if len(sys.argv) > 4 else 2)
    records = open(fasta).read().split(">")[1:]
    sequence = "".join("".join(r.splitlines()[1:]).strip() for r in records)
    model, alphabet = load(model_path)
    started = time.perf_counter()
    contacts = categorical_jacobian(model, alphabet, sequence, int(sys.argv[5]) if len(sys.argv) > 5 else None)
    print(f"seconds {time.perf_counter() - started:.2f}", file=sys.stderr)
    np.save(out, contacts.astype(np.float32))
    return 0


if __name__ == "__main__":
    sys.exit(main())
