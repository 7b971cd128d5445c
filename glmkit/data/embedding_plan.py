"""The rows `embed` writes when it extends or merges embedding stores: every row of the stores given (a hash's
first occurrence, in store order), then the proteins left to embed (by length), then the aliases (this run's
cluster members, then the stores' own). Planned from the stores' hash columns read chunk by chunk: memory holds
the inputs' hashes and the rows dropped as repeats, never every stored hash (issue 11: a store of 10^8 rows has
6.4 GB of them). Repeats across several stores are found bucket by bucket of the digest space."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field

import numpy as np

from glmkit.io.embeddings import EmbeddingStore, HashIndex, PlannedRows, digests

log = logging.getLogger("glmkit")

BUCKET_KEYS = 1 << 21   # hashes held at once while finding repeats across stores (~100 bytes each: ~200 MB)


@dataclass
class EmbedPlan:
    stores: list[EmbeddingStore]
    dropped: list[np.ndarray]          # per store: sorted rows not copied (an earlier store has their hash)
    replaced_by: list[np.ndarray]      # per store: the output row standing for each dropped row
    dropped_aliases: list[np.ndarray]  # per store: sorted aliases not copied (own row, or an earlier alias)
    new: list[str]                     # hashes to embed, in row order after the copied rows
    new_lengths: np.ndarray
    inputs: HashIndex                  # the inputs' distinct hashes -> position in `found`
    found: np.ndarray                  # per input hash: its output row, -1 if none
    member_aliases: tuple[np.ndarray, np.ndarray]   # this run's cluster members (S64) and their rows
    offsets: np.ndarray = field(init=False)         # output row of each store's first copied row, then n_copied

    def __post_init__(self):
        kept = [len(s) - len(d) for s, d in zip(self.stores, self.dropped)]
        self.offsets = np.concatenate([[0], np.cumsum(kept)]).astype(np.int64)

    @property
    def n_copied(self) -> int:
        return int(self.offsets[-1])

    @property
    def n(self) -> int:
        return self.n_copied + len(self.new)

    def output_rows(self, i: int, rows: np.ndarray) -> np.ndarray:
        """Output row of rows of store ``i`` (a dropped row: the row standing for it)."""
        dropped = self.dropped[i]
        before = np.searchsorted(dropped, rows)                 # dropped rows ahead of each
        out = self.offsets[i] + rows - before
        if len(dropped):
            at = np.minimum(before, len(dropped) - 1)
            hit = dropped[at] == rows
            out[hit] = self.replaced_by[i][at[hit]]
        return out

    def copied(self, start: int, stop: int):
        """(store, positions in [start, stop), its rows) for the copied output rows in [start, stop)."""
        for i in range(len(self.stores)):
            lo, hi = max(start, self.offsets[i]), min(stop, self.offsets[i + 1])
            if lo >= hi:
                continue
            k = np.arange(lo - self.offsets[i], hi - self.offsets[i])    # i's k-th copied row ...
            shift = self.dropped[i] - np.arange(len(self.dropped[i]))
            yield i, np.arange(lo, hi) - start, k + np.searchsorted(shift, k, side="right")   # ... is this row

    def _kept_rows(self, i: int, first: int, size: int) -> np.ndarray:
        rows = np.arange(first, first + size)
        return ~np.isin(rows, self.dropped[i], assume_unique=True) if len(self.dropped[i]) else np.ones(size, bool)

    def _kept_aliases(self, i: int, first: int, hashes: np.ndarray) -> np.ndarray:
        """A store's aliases that go to the output: not repeated in an earlier store (nor as a stored row), not a
        protein that has a row now, not one of this run's cluster members."""
        keep = ~np.isin(np.arange(first, first + len(hashes)), self.dropped_aliases[i])
        keys = digests(hashes)
        if len(self.found):
            at = self.inputs.lookup_digests(keys)
            keep &= (at < 0) | (self.found[np.maximum(at, 0)] < 0)
        keep &= self._members.lookup_digests(keys) < 0
        return keep

    @functools.cached_property
    def _members(self) -> HashIndex:
        return HashIndex.of_hexes(self.member_aliases[0], self.member_aliases[1])

    def rows(self) -> PlannedRows:
        """The output's columns, piece by piece, for the writer."""
        def pieces():
            for i, store in enumerate(self.stores):
                for first, hashes, lengths in store.hash_chunks():
                    keep = self._kept_rows(i, first, len(hashes))
                    yield hashes[keep], lengths[keep]
            yield np.array(self.new, dtype="S64"), self.new_lengths

        def alias_pieces():
            yield self.member_aliases
            for i, store in enumerate(self.stores):
                for first, hashes, rows in store.hash_chunks(aliases=True):
                    keep = self._kept_aliases(i, first, hashes)
                    yield hashes[keep], self.output_rows(i, rows[keep])

        n_aliases = len(self.member_aliases[0]) + sum(
            int(self._kept_aliases(i, first, hashes).sum())
            for i, store in enumerate(self.stores) for first, hashes, _ in store.hash_chunks(aliases=True))
        return PlannedRows(self.n, n_aliases, pieces, alias_pieces)


def plan_embed(stores: list[EmbeddingStore], sequences: dict[str, bytes], representative: dict[str, str],
               wanted, in_shard) -> EmbedPlan:
    """``sequences``: the inputs' distinct proteins by hash; ``representative``: each one's row-holder (itself
    unless clustered); ``wanted``: the hashes that need a row; ``in_shard``: whether this run embeds a hash."""
    dropped, firsts, dropped_aliases = _repeats(stores)
    hexes = sorted(sequences)
    inputs = HashIndex.of_hexes(hexes, np.arange(len(hexes)))
    plan = EmbedPlan(stores, dropped, [np.zeros(0, np.int64) for _ in stores], dropped_aliases, [],
                     np.zeros(0, np.int32), inputs, np.full(len(hexes), -1, np.int64),
                     (np.zeros(0, "S64"), np.zeros(0, np.int64)))
    # the output row standing for each dropped row: its first occurrence's (a kept row), known now that every
    # drop is
    for i, pairs in enumerate(firsts):
        plan.replaced_by[i] = np.empty(len(pairs), np.int64)
        for j in np.unique(pairs[:, 0]):
            mine = pairs[:, 0] == j
            plan.replaced_by[i][mine] = plan.output_rows(int(j), pairs[mine, 1])
    for i, store in enumerate(stores):
        for first, hashes, _ in store.hash_chunks():
            keep = plan._kept_rows(i, first, len(hashes))
            at = inputs.lookup_digests(digests(hashes[keep]))
            hit = at >= 0
            plan.found[at[hit]] = plan.output_rows(i, np.arange(first, first + len(hashes))[keep][hit])
    position = dict(zip(hexes, range(len(hexes))))
    missing = {h for h in wanted if plan.found[position[h]] < 0 and in_shard(h)}
    plan.new = sorted(missing, key=lambda h: (len(sequences[h]), h))
    plan.new_lengths = np.array([len(sequences[h]) for h in plan.new], dtype=np.int32)
    if plan.new:
        plan.found[[position[h] for h in plan.new]] = plan.n_copied + np.arange(len(plan.new))
    members = sorted(h for h, rep in representative.items() if h != rep)
    own = plan.found[[position[h] for h in members]] if members else np.zeros(0, np.int64)
    target = plan.found[[position[representative[h]] for h in members]] if members else own
    alias = (own < 0) & (target >= 0)
    plan.member_aliases = (np.array(members, dtype="S64")[alias], target[alias])
    return plan


def _repeats(stores: list[EmbeddingStore]):
    """Rows and aliases of several stores whose hash an earlier one already has: per store the dropped rows
    (sorted), (store, row) of the first occurrence of each, and the dropped aliases. A hash that is a row
    anywhere keeps its first row and loses every alias; otherwise its first alias stays. One store's rows and
    aliases are distinct by construction, so one store needs no pass."""
    dropped: list[list] = [[] for _ in stores]
    firsts: list[list] = [[] for _ in stores]
    dropped_aliases: list[list] = [[] for _ in stores]
    total = sum(len(s) + s.n_aliases for s in stores)
    buckets = -(-total // BUCKET_KEYS) if len(stores) > 1 else 0
    if buckets > 1:
        log.info(f"embed: finding repeated hashes among {len(stores)} stores ({total:,} hashes) in {buckets} passes")
    for bucket in range(buckets):
        keys, where = [], []   # where: (store, kind 0 row / 1 alias, index), in store, kind, index order
        for i, store in enumerate(stores):
            for kind in (0, 1):
                for first, hashes, _ in store.hash_chunks(aliases=bool(kind)):
                    d = digests(hashes)
                    mine = np.flatnonzero(_bucket_of(d, buckets) == bucket)
                    keys.append(d[mine])
                    where.append(np.stack([np.full(len(mine), i), np.full(len(mine), kind), first + mine], 1))
        if not keys:
            continue
        keys, where = np.concatenate(keys), np.concatenate(where)
        order = np.argsort(keys, kind="stable")   # stable: a hash's entries stay in store, kind, index order
        keys, where = keys[order], where[order]
        group = np.cumsum(np.r_[True, keys[1:] != keys[:-1]]) - 1          # each entry's hash, numbered
        is_row = where[:, 1] == 0
        position = np.arange(len(keys))
        none = len(keys)
        first_row = np.full(group[-1] + 1 if len(keys) else 0, none)      # per hash: its first row entry ...
        np.minimum.at(first_row, group[is_row], position[is_row])
        first_alias = np.full(len(first_row), none)                         # ... and its first alias entry
        np.minimum.at(first_alias, group[~is_row], position[~is_row])
        has_row = first_row[group] < none
        drop_row = is_row & (position != first_row[group])
        drop_alias = ~is_row & (has_row | (position != first_alias[group]))
        for i in range(len(stores)):
            mine = where[:, 0] == i
            dropped[i].append(where[drop_row & mine, 2])
            firsts[i].append(where[first_row[group[drop_row & mine]]][:, [0, 2]])
            dropped_aliases[i].append(where[drop_alias & mine, 2])

    def joined(parts, shape):
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(shape, np.int64)

    dropped = [joined(d, 0) for d in dropped]
    firsts = [joined(f, (0, 2)) for f in firsts]
    orders = [np.argsort(d, kind="stable") for d in dropped]
    return ([d[o] for d, o in zip(dropped, orders)], [f[o] for f, o in zip(firsts, orders)],
            [np.unique(joined(a, 0)) for a in dropped_aliases])


def _bucket_of(keys: np.ndarray, buckets: int) -> np.ndarray:
    if buckets == 1:
        return np.zeros(len(keys), np.int64)
    top = np.frombuffer(keys.tobytes(), dtype=">u4")[::8].astype(np.uint64)   # first 4 bytes of each digest
    return (top * buckets >> 32).astype(np.int64)
