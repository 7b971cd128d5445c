"""embed's plan over stores read chunk by chunk: equal to a naive dict-based merge written here, in one pass and
in many buckets, and an extend that never reads a store's whole hash column."""

from __future__ import annotations

import random

import numpy as np
import pytest

import glmkit.data.embedding_plan as embed_plan
import glmkit.io.embeddings as embeddings
from glmkit.data.embedding_plan import plan_embed
from glmkit.io.embeddings import EmbeddingStore, PlannedRows, ResumableEmbeddingWriter, sequence_hash

AA = "ACDEFGHIKLMNPQRSTVWY"


def protein(rng):
    return "".join(rng.choice(AA) for _ in range(rng.randint(5, 40))).encode()


def store(path, seqs, aliases, rng):
    """A finished store written by glmkit's writer (hash columns in chunks of 3 rows: the fixture sets it)."""
    hashes = [sequence_hash(s) for s in seqs]
    writer = ResumableEmbeddingWriter(path, {}, [], PlannedRows.in_memory(hashes, list(map(len, seqs)), aliases),
                                      4, "float32", {"name": "m", "embed_dim": 4, "layer": 1}, 2)
    for k in writer.pending():
        rows = writer.rows(k)
        writer.write_chunk(k, np.asarray(rng.normal(size=(len(rows), 4)), np.float32))
    writer.publish([])
    return EmbeddingStore(path)


def naive(stores, sequences, representative, wanted, in_shard):
    """The merge the plan makes, with dicts and every hash in memory."""
    out, row_of, source = [], {}, []
    for i, s in enumerate(stores):
        for r, h in enumerate(map(str, s.hashes)):
            if h not in row_of:
                row_of[h] = len(out)
                out.append(h)
                source.append((i, r))
    new = sorted({h for h in wanted if h not in row_of and in_shard(h)}, key=lambda h: (len(sequences[h]), h))
    for h in new:
        row_of[h] = len(out)
        out.append(h)
    aliases = {}
    for h in sorted(h for h, rep in representative.items() if h != rep):
        if h not in row_of and representative[h] in row_of:
            aliases[h] = row_of[representative[h]]
    for s in stores:
        for h, r in zip(map(str, s.alias_hashes), s.alias_rows):
            if h not in row_of:
                aliases.setdefault(h, row_of[str(s.hashes[r])])
    return out, source, aliases


@pytest.fixture
def stores_and_inputs(tmp_path, monkeypatch):
    """Three stores that share rows, whose aliases are other stores' rows and each other's, and inputs that
    repeat stored proteins, add new ones, and cluster some onto others."""
    monkeypatch.setattr(embeddings, "HASH_CHUNK_ROWS", 3)
    rng = random.Random(3)
    seqs = [protein(rng) for _ in range(60)]
    h = [sequence_hash(s) for s in seqs]
    nprng = np.random.default_rng(0)
    # b's rows 10-19 repeat a's, c's 28-29 b's and 0-3 a's (16 rows dropped); aliases: 25 and 5 are rows
    # elsewhere, 40 and 42 repeat, c's 43 stands on its row 9, a dropped row (h1), and is a member below
    stores = [store(tmp_path / "a.zarr", seqs[0:20], {h[40]: 3, h[41]: 5, h[25]: 0}, nprng),
              store(tmp_path / "b.zarr", seqs[10:30], {h[40]: 1, h[42]: 2, h[5]: 7}, nprng),
              store(tmp_path / "c.zarr", seqs[28:36] + seqs[0:4], {h[43]: 9, h[42]: 0}, nprng)]
    inputs = list(range(30, 58))            # 30-35 stored in c, 36-57 not stored
    sequences = {h[i]: seqs[i] for i in inputs}
    representative = {x: x for x in sequences}
    for member, rep in ((50, 51), (52, 30), (53, 2), (43, 44)):   # 2 is stored but no input
        sequences.setdefault(h[member], seqs[member])
        sequences.setdefault(h[rep], seqs[rep])
        representative[h[member]] = h[rep]
        representative.setdefault(h[rep], h[rep])
    wanted = [representative[h[i]] for i in inputs]
    in_shard = lambda x: int(x[:15], 16) % 3 != 1   # noqa: E731 - some new proteins belong to another shard
    return stores, sequences, representative, wanted, in_shard


def columns(planned: PlannedRows):
    hashes = np.concatenate([p[0] for p in planned.pieces()]).astype(str).tolist()
    lengths = np.concatenate([p[1] for p in planned.pieces()]).tolist()
    alias_hashes = np.concatenate([p[0] for p in planned.alias_pieces()]).astype(str).tolist()
    alias_rows = np.concatenate([p[1] for p in planned.alias_pieces()]).tolist()
    return hashes, lengths, dict(zip(alias_hashes, alias_rows)), len(alias_hashes)


@pytest.mark.parametrize("bucket_keys", [1 << 21, 7])
def test_plan_equals_a_naive_merge(stores_and_inputs, monkeypatch, bucket_keys):
    monkeypatch.setattr(embed_plan, "BUCKET_KEYS", bucket_keys)   # 7: the repeats are found in 19 passes
    stores, sequences, representative, wanted, in_shard = stores_and_inputs
    out, source, aliases = naive(stores, sequences, representative, wanted, in_shard)
    plan = plan_embed(stores, sequences, representative, wanted, in_shard)
    assert plan.n_copied == len(source) and len(out) == plan.n
    assert [len(d) for d in plan.dropped] == [0, 10, 6]
    hashes, lengths, planned_aliases, n_aliases = columns(plan.rows())
    assert hashes == out and plan.rows().n == len(out)
    lengths_of = {**{str(h): int(n) for s in stores for h, n in zip(s.hashes, s.lengths)},
                  **{k: len(v) for k, v in sequences.items()}}
    assert lengths == [lengths_of[x] for x in out]
    assert planned_aliases == aliases and n_aliases == len(aliases) == plan.rows().n_aliases
    copied = [None] * plan.n_copied
    for start in range(0, plan.n_copied + 5, 5):   # asked for in pieces, as embed's chunks do
        for i, positions, rows in plan.copied(start, start + 5):
            for p, r in zip(positions, rows):
                copied[start + p] = (i, int(r))
    assert copied == source


def test_no_stores_plans_inputs_only(stores_and_inputs):
    _, sequences, representative, wanted, in_shard = stores_and_inputs
    out, _, aliases = naive([], sequences, representative, wanted, in_shard)
    plan = plan_embed([], sequences, representative, wanted, in_shard)
    hashes, _, planned_aliases, _ = columns(plan.rows())
    assert plan.n_copied == 0 and hashes == out and plan.new == out and planned_aliases == aliases


def test_the_whole_hash_column_is_never_read(stores_and_inputs, monkeypatch):
    """Planning reads stored hashes only through hash_chunks, one stored chunk at a time."""
    stores, sequences, representative, wanted, in_shard = stores_and_inputs
    expected = columns(plan_embed(stores, sequences, representative, wanted, in_shard).rows())
    fresh = [EmbeddingStore(s.path) for s in stores]

    def refuse(self, *args):
        raise AssertionError("a whole column read")
    for name in ("hashes", "alias_hashes", "alias_rows", "lengths"):
        monkeypatch.setattr(EmbeddingStore, name, property(refuse))
    monkeypatch.setattr(EmbeddingStore, "fixed_hashes", refuse)
    largest = []
    original = EmbeddingStore.hash_chunks

    def chunks(self, aliases=False):
        for first, hashes, other in original(self, aliases):
            largest.append(len(hashes))
            yield first, hashes, other
    monkeypatch.setattr(EmbeddingStore, "hash_chunks", chunks)
    assert columns(plan_embed(fresh, sequences, representative, wanted, in_shard).rows()) == expected
    assert largest and max(largest) == 3 < min(len(s) for s in fresh)
