"""Proteins named as inputs: protein FASTA files and the CDS of element stores, each protein by id with the
hash of its sequence (what embedding stores are keyed by), and embedding stores given beside them."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from glmkit.errors import GlmkitError
from glmkit.io.elements import CDS, ElementStore
from glmkit.io.embeddings import EmbeddingStore, sequence_hash
from glmkit.io.fasta import PROTEIN_ALPHABET, read_fasta
from glmkit.io.files import InputFile
from glmkit.io.store import store_record, store_schema


def proteins_of_store(path: str) -> Iterator[tuple[str, bytes]]:
    store = ElementStore(path)
    for batch in store.batches(columns=("id", "type", "aa")):
        cds = np.flatnonzero(batch.elements["type"] == CDS)
        for i in cds:
            aa = batch.elements["aa"][i]
            bad = aa.translate(None, PROTEIN_ALPHABET)
            if bad:
                raise GlmkitError(f"{path}: protein {batch.elements['id'][i]} has invalid character '{chr(bad[0])}'")
            yield batch.elements["id"][i], aa


def collect_inputs(inputs: Sequence[str], nucleotide_check: bool = True):
    """Proteins (id, hash), distinct sequences by hash, embedding stores given as inputs, provenance records."""
    proteins: list[tuple[str, str]] = []
    sequences: dict[str, bytes] = {}
    stores: list[EmbeddingStore] = []
    records: list = []
    seen_ids: dict[str, str] = {}
    for path in inputs:
        if path != "-" and Path(path).is_dir():
            schema = store_schema(path)
            if schema == "glmkit.embeddings":
                stores.append(EmbeddingStore(path))
                records.append(store_record(path))
                continue
            if schema != "glmkit.elements":
                raise GlmkitError(f"{path}: not an element store, an embedding store or a protein FASTA file")
            found, records_entry = proteins_of_store(path), store_record(path)
        else:
            source = InputFile(path)
            alphabet = "protein" if nucleotide_check else "any-protein"
            found, records_entry = ((r.name, r.sequence) for r in read_fasta(source, alphabet)), source
        for protein_id, sequence in found:
            if protein_id in seen_ids:
                raise GlmkitError(f"{path}: duplicate protein id '{protein_id}' (first seen in {seen_ids[protein_id]})")
            seen_ids[protein_id] = path
            h = sequence_hash(sequence)
            sequences.setdefault(h, sequence)
            proteins.append((protein_id, h))
        records.append(records_entry)
    return proteins, sequences, stores, records
