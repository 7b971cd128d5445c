#!/usr/bin/env python3
"""fair-esm's scripts/extract.py with --include mean, reproduced from fair-esm's own API.

The fair-esm 2.0.0 wheel does not ship scripts/extract.py, so this follows its
algorithm step by step: FastaBatchedDataset.get_batch_indices(toks_per_batch,
extra_toks_per_seq=1), BatchConverter(truncation_seq_length), one forward per
batch, mean of the last layer over residues 1..L, one torch.save per protein.
Like extract.py, it runs on the GPU when one is visible, unless --nogpu. The only
change: torch >= 2.6 needs weights_only=False to read the file (ours).

    python bench/fair_esm_extract.py MODEL.pt proteins.faa OUTDIR [--toks-per-batch 4096] [--nogpu]
"""

import argparse
import pathlib

import esm
import torch


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("fasta")
    p.add_argument("outdir", type=pathlib.Path)
    p.add_argument("--toks-per-batch", type=int, default=4096)
    p.add_argument("--truncation-seq-length", type=int, default=1022)
    p.add_argument("--nogpu", action="store_true")
    args = p.parse_args()

    data = torch.load(args.model, map_location="cpu", weights_only=False)
    model, alphabet = esm.pretrained.load_model_and_alphabet_core(pathlib.Path(args.model).stem, data)
    model.eval()
    gpu = torch.cuda.is_available() and not args.nogpu
    if gpu:
        model = model.cuda()
    dataset = esm.FastaBatchedDataset.from_file(args.fasta)
    batches = dataset.get_batch_indices(args.toks_per_batch, extra_toks_per_seq=1)
    loader = torch.utils.data.DataLoader(dataset, collate_fn=alphabet.get_batch_converter(args.truncation_seq_length),
                                         batch_sampler=batches)
    args.outdir.mkdir(parents=True, exist_ok=True)
    layer = model.num_layers
    with torch.no_grad():
        for labels, strs, toks in loader:
            if gpu:
                toks = toks.to(device="cuda", non_blocking=True)
            out = model(toks, repr_layers=[layer], return_contacts=False)
            representations = {layer: t.to(device="cpu") for layer, t in out["representations"].items()}
            for i, label in enumerate(labels):
                truncate_len = min(args.truncation_seq_length, len(strs[i]))
                result = {"label": label, "mean_representations": {
                    layer: t[i, 1:truncate_len + 1].mean(0).clone() for layer, t in representations.items()}}
                torch.save(result, args.outdir / f"{label}.pt")


if __name__ == "__main__":
    main()
