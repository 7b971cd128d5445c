"""Streaming training data: items packed into rows, shuffled by windows, shared out by rank, read ahead.

Shared by every training task (the gLM's sub-contigs of genes, gLM2's chunks
of tokens). Items live in a store in corpus order; memory never holds more
than a window of them.

Shuffling: an epoch visits the windows (``window`` consecutive items of the
store) in a seeded random order and, within each window, its items in a
seeded random order; the items of a window are packed into rows of
``capacity`` (several short items share a row, attending only within
themselves) and the rows are dealt out in that order. Reads stay within a
window, so random order does not mean one random read per gene. Each step
takes the next ``batch_size`` rows of this global stream; process ``rank`` of
``world`` takes rows rank, rank + world, ...: the ranks' shares are disjoint
and together they are the epoch. Everything is a function of (seed, epoch,
window), and the position in the stream is a small state saved with each
checkpoint, so a resumed run continues exactly.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np


def pack_rows(lengths: np.ndarray, capacity: int) -> list[np.ndarray]:
    """Items (in the given order) packed into rows of ``capacity``: each goes to the open row it fills best
    (least room left), else starts a new row. O(n x capacity). Returns positions into ``lengths`` per row."""
    rows: list[list[int]] = []
    # room -> open rows with exactly that room; only rooms some row has (a capacity of 10^8 costs nothing)
    open_by_room: dict[int, list[int]] = {}
    for i, n in enumerate(np.asarray(lengths).tolist()):
        if not 0 < n <= capacity:
            raise ValueError(f"item of length {n} does not fit rows of {capacity}")
        # the best fit, the least room left: scan the rooms from n up, or the open rows' rooms, whichever is fewer
        if capacity - n <= len(open_by_room):
            room = next((r for r in range(n, capacity) if r in open_by_room), None)
        else:
            room = min((r for r in open_by_room if r >= n), default=None)
        if room is None:
            rows.append([i])
            row, left = len(rows) - 1, capacity - n
        else:
            row = open_by_room[room].pop()
            if not open_by_room[room]:
                del open_by_room[room]
            rows[row].append(i)
            left = room - n
        if left:
            open_by_room.setdefault(left, []).append(row)
    return [np.array(r, dtype=np.int64) for r in rows]


@dataclass
class StreamState:
    epoch: int = 0
    window: int = 0   # position in the epoch's window order
    row: int = 0      # rows of that window already dealt

    def as_list(self) -> list[int]:
        return [self.epoch, self.window, self.row]


class PackedStream:
    """The global stream of packed rows (see the module docstring); ``take(n)`` deals the next n rows.

    ``read_window(start, stop)`` returns (lengths, keep) of items start:stop: their
    lengths and which of them belong to this stream (e.g. the training split).
    A row is an int64 array of global item indices.
    """

    def __init__(self, n_items: int, read_window: Callable[[int, int], tuple[np.ndarray, np.ndarray]],
                 capacity: int, window: int, seed: int, shuffle: bool = True, repeat: bool = True,
                 state: StreamState | None = None):
        self.n_items, self.read_window, self.capacity = n_items, read_window, capacity
        self.window, self.seed, self.shuffle, self.repeat = window, seed, shuffle, repeat
        self.n_windows = -(-n_items // window) if n_items else 0
        self.state = state or StreamState()
        self._cached: tuple[int, int, list[np.ndarray]] | None = None  # (epoch, window index, rows)

    def window_order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.n_windows)
        return np.random.default_rng([self.seed, epoch]).permutation(self.n_windows)

    def rows_of_window(self, epoch: int, w: int) -> list[np.ndarray]:
        if self._cached and self._cached[:2] == (epoch, w):
            return self._cached[2]
        start, stop = w * self.window, min((w + 1) * self.window, self.n_items)
        lengths, keep = self.read_window(start, stop)
        items = np.flatnonzero(keep)
        if self.shuffle:
            items = items[np.random.default_rng([self.seed, epoch, w]).permutation(len(items))]
        rows = [start + items[r] for r in pack_rows(lengths[items], self.capacity)] if len(items) else []
        self._cached = (epoch, w, rows)
        return rows

    def take(self, n: int) -> list[np.ndarray]:
        """The next ``n`` rows (fewer only at the end of a stream that does not repeat)."""
        out: list[np.ndarray] = []
        s = self.state
        empty_epochs = 0
        while len(out) < n:
            if s.window >= self.n_windows:
                if not self.repeat or empty_epochs:
                    break
                s.epoch, s.window, s.row = s.epoch + 1, 0, 0
                empty_epochs += not out
                continue
            rows = self.rows_of_window(s.epoch, int(self.window_order(s.epoch)[s.window]))
            got = rows[s.row:s.row + n - len(out)]
            out.extend(got)
            s.row += len(got)
            if s.row >= len(rows):
                s.window, s.row = s.window + 1, 0
        return out

    def fraction(self) -> float:
        """Epochs dealt so far, as a float (windows count equally)."""
        return self.state.epoch + self.state.window / max(1, self.n_windows)


class ChunkCache:
    """Runs of rows of a store's arrays, read a whole chunk at a time through a small cache of recently used
    chunks: the rows of a window are read once, whatever order a batch takes them in. ``read_chunk(k)`` returns
    the arrays' rows k * chunk .. (k + 1) * chunk, as a tuple."""

    def __init__(self, read_chunk: Callable[[int], tuple], chunk: int, cache_chunks: int = 16):
        self.read_chunk, self.chunk, self.cache_chunks = read_chunk, chunk, cache_chunks
        self._cache: dict[int, tuple] = {}
        self.reads = 0  # chunks read (for the benchmarks)

    def _get(self, k: int) -> tuple:
        if k in self._cache:
            value = self._cache.pop(k)
        else:
            value = self.read_chunk(k)
            self.reads += 1
            if len(self._cache) >= self.cache_chunks:
                self._cache.pop(next(iter(self._cache)))
        self._cache[k] = value  # most recently used last
        return value

    def rows(self, start: int, length: int) -> tuple:
        """Each array's rows start .. start + length - 1."""
        parts = []
        for k in range(start // self.chunk, (start + length - 1) // self.chunk + 1):
            lo, hi = max(start - k * self.chunk, 0), start + length - k * self.chunk
            parts.append(tuple(a[lo:hi] for a in self._get(k)))
        if len(parts) == 1:
            return parts[0]
        return tuple(np.concatenate(column) for column in zip(*parts))


def table_rows(array, items: np.ndarray, gap: int = 4096) -> np.ndarray:
    """array[items] for sorted or unsorted item indices, read as a few contiguous slices (items of a step come
    from one or two windows, which may lie far apart in the store)."""
    if not len(items):
        return np.zeros(0, dtype=array.dtype)
    order = np.argsort(items, kind="stable")
    sorted_items = items[order]
    out = np.empty(len(items), dtype=array.dtype)
    breaks = np.flatnonzero(np.diff(sorted_items) > gap) + 1
    for run in np.split(np.arange(len(items)), breaks):
        lo, hi = int(sorted_items[run[0]]), int(sorted_items[run[-1]]) + 1
        out[order[run]] = array[lo:hi][sorted_items[run] - lo]
    return out


def rank_share(rows: list, rank: int, world: int) -> list:
    """This process's rows of a step: rank, rank + world, ..."""
    return rows[rank::world]


class Prefetcher:
    """Runs ``produce`` (a generator of per-step data) in a background thread, ``depth`` items ahead.

    numpy and zarr release the GIL for reading, decompressing and arithmetic,
    so the next batches are read while the model computes. ``get()`` returns
    the next item and adds the time it waited to ``waited``.
    """

    def __init__(self, produce: Iterator, depth: int = 3):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self.waited = 0.0
        self._thread = threading.Thread(target=self._run, args=(produce,), daemon=True, name="glmkit-prefetch")
        self._thread.start()

    def _run(self, produce: Iterator) -> None:
        try:
            for item in produce:
                while not self._stop.is_set():
                    try:
                        self._queue.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
            self._put_final((None, StopIteration()))
        except BaseException as e:  # handed to the consumer, raised there
            self._put_final((None, e))

    def _put_final(self, entry) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.1)
                return
            except queue.Full:
                continue

    def get(self):
        started = time.perf_counter()
        item, error = self._queue.get()
        self.waited += time.perf_counter() - started
        if error is not None:
            raise error
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


class PackedTask:
    """The data half of a training task (glmkit/train.py) whose items are packed into rows: the gLM's
    sub-contigs of genes, gLM2's chunks of tokens.

    A subclass sets, before use: ``split`` (glmkit.data.split.Split: held-out contigs), ``seed``, ``capacity``
    (row length), ``_keys`` (the contigs' split keys), ``_starts``, ``_lengths`` and ``_item_contig`` (per item:
    where it starts in the store, its length and its contig), ``n_items``, ``name`` (for messages); and defines ``reader()`` (what ``_batch`` reads items with)
    and ``_batch(rows, global_rows, step, reader)`` -> a micro-batch dict with "count" and "units".
    """

    window = 1024           # items per shuffle window
    VALIDATION_STREAM = -1  # the "step" of validation masks: fixed for the whole run

    def _item_table(self, rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """(starts, lengths) of the rows' items, read in a few slices, and each row's positions into them."""
        items = np.concatenate(rows)
        local = np.split(np.arange(len(items)), np.cumsum([len(r) for r in rows])[:-1])
        return table_rows(self._starts, items), table_rows(self._lengths, items), local

    def _window(self, validation: bool):
        def read(start: int, stop: int):
            contig = self._item_contig[start:stop]
            lo = int(contig.min())
            held_out = self.split.validation(self._keys[lo:int(contig.max()) + 1])[contig - lo]
            return self._lengths[start:stop], held_out if validation else ~held_out
        return read

    def stream(self, validation: bool, state: StreamState | None = None) -> PackedStream:
        return PackedStream(self.n_items, self._window(validation), self.capacity, self.window, self.seed,
                            shuffle=not validation, repeat=not validation, state=state)

    def train_steps(self, state, rank: int, world: int, rows_per_rank: int, accumulate: int, first_step: int = 0):
        """Per step: this process's micro-batches, the stream state after the step, epochs so far, units."""
        from glmkit.errors import GlmkitError

        stream = self.stream(False, StreamState(*state) if state else None)
        reader = self.reader()
        step = first_step
        while True:
            rows = stream.take(rows_per_rank * world)
            if len(rows) < rows_per_rank * world:
                raise GlmkitError(f"{self.name}: nothing to train on in the training split")
            index = np.arange(step * len(rows), (step + 1) * len(rows))  # global row numbers, for the masks
            mine, mine_index = rank_share(rows, rank, world), rank_share(index, rank, world)
            size = rows_per_rank // accumulate
            micro = [self._batch(mine[k:k + size], mine_index[k:k + size], step, reader)
                     for k in range(0, rows_per_rank, size)]
            step += 1
            yield micro, stream.state.as_list(), stream.fraction(), sum(b.pop("units") for b in micro)

    def validation(self, rank: int, world: int, rows_per_batch: int):
        stream = self.stream(True)
        reader = self.reader()
        offset = 0
        while True:
            rows = stream.take(rows_per_batch * world)
            if not rows:
                return
            index = np.arange(offset, offset + len(rows))
            offset += len(rows)
            mine, mine_index = rank_share(rows, rank, world), rank_share(index, rank, world)
            if mine:
                batch = self._batch(mine, np.asarray(mine_index), self.VALIDATION_STREAM, reader)
                batch.pop("units")
                yield batch
