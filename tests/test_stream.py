"""glmkit.data.stream: packing, the windowed shuffle, shares by rank, exact resume of the stream, the prefetcher."""

from __future__ import annotations

import time

import numpy as np
import pytest

from glmkit.data.stream import PackedStream, Prefetcher, StreamState, pack_rows, rank_share


def test_pack_rows_fills_rows_and_keeps_every_item():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 31, 500)
    rows = pack_rows(lengths, 30)
    assert sorted(np.concatenate(rows).tolist()) == list(range(500))
    assert all(lengths[r].sum() <= 30 for r in rows)
    # best fit: no two rows could have been merged (a row with room r and a row of total <= r)
    totals = sorted(int(lengths[r].sum()) for r in rows)
    assert totals[0] + totals[1] > 30
    with pytest.raises(ValueError, match="does not fit"):
        pack_rows(np.array([31]), 30)


def test_pack_rows_pairs_real_subcontig_lengths():
    """gLM sub-contigs are 15-30 genes: pairs of 15 share a row, every other length has its own."""
    rows = pack_rows(np.array([30, 15, 15, 20, 10, 29, 15]), 30)
    assert sorted(sorted(r.tolist()) for r in rows) == [[0], [1, 2], [3, 4], [5], [6]]


def test_pack_rows_is_linear():
    """10^6 items: a few seconds (the first version was quadratic: 11 s for 20,000)."""
    lengths = np.random.default_rng(1).integers(15, 31, 1_000_000)
    started = time.perf_counter()
    rows = pack_rows(lengths, 30)
    assert time.perf_counter() - started < 30 and len(rows) < 1_000_000


def _stream(n=1000, window=64, seed=3, state=None, keep_every=1, shuffle=True, repeat=True):
    lengths = (np.arange(n) % 16) + 15

    def read(start, stop):
        return lengths[start:stop], (np.arange(start, stop) % keep_every) == 0
    return PackedStream(n, read, 30, window, seed, shuffle=shuffle, repeat=repeat, state=state), lengths


def test_an_epoch_deals_every_kept_item_once_in_a_seeded_order():
    stream, _ = _stream(keep_every=3)
    first_epoch = []
    while True:
        row = stream.take(1)
        if stream.state.epoch:  # this row already belongs to the second epoch
            break
        first_epoch.extend(row)
    dealt = np.concatenate(first_epoch)
    assert sorted(dealt.tolist()) == list(range(0, 1000, 3))  # each kept item once, the others never
    assert not np.array_equal(dealt, np.sort(dealt))           # shuffled
    again, _ = _stream(keep_every=3)
    assert all(np.array_equal(a, b) for a, b in zip(again.take(40), first_epoch[:40]))  # same seed, same order
    other, _ = _stream(keep_every=3, seed=4)
    assert not all(np.array_equal(a, b) for a, b in zip(other.take(40), first_epoch[:40]))


def test_rows_stay_within_a_window():
    stream, _ = _stream(window=100)
    for row in stream.take(200):
        assert len({int(i) // 100 for i in row}) == 1


def test_rank_shares_are_disjoint_and_together_the_stream():
    """Two processes each take rows rank, rank + 2, ... of every step: no sub-contig read twice, none missed."""
    world, per_step = 2, 8
    shares = {0: [], 1: []}
    whole, _ = _stream()
    expected = whole.take(per_step * 30)
    for rank in range(world):
        stream, _ = _stream()
        for _ in range(30):
            shares[rank].extend(rank_share(stream.take(per_step), rank, world))
    a, b = (set(np.concatenate(shares[r]).tolist()) for r in range(world))
    assert not a & b
    assert a | b == set(np.concatenate(expected).tolist())


def test_a_saved_state_continues_the_stream_exactly():
    stream, _ = _stream()
    stream.take(37)
    saved = StreamState(*stream.state.as_list())
    rest = stream.take(500)
    resumed, _ = _stream(state=saved)
    assert all(np.array_equal(a, b) for a, b in zip(resumed.take(500), rest))


def test_a_stream_that_does_not_repeat_ends():
    stream, _ = _stream(n=100, shuffle=False, repeat=False)
    rows = stream.take(10_000)
    assert sorted(np.concatenate(rows).tolist()) == list(range(100)) and stream.take(5) == []


def test_prefetcher_reads_ahead_and_hands_over_errors():
    def produce():
        yield 1
        yield 2
        raise RuntimeError("bad batch")

    prefetch = Prefetcher(produce())
    assert prefetch.get() == 1 and prefetch.get() == 2
    with pytest.raises(RuntimeError, match="bad batch"):
        prefetch.get()
    prefetch.close()

    def slow():
        for i in range(3):
            time.sleep(0.05)
            yield i

    prefetch = Prefetcher(slow())
    assert [prefetch.get() for _ in range(3)] == [0, 1, 2] and prefetch.waited > 0.05
    prefetch.close()
