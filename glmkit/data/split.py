"""The train/validation split, drawn by contig (never by gene) from (seed, contig name): the same on every
process and for every model."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np


def contig_keys(names: Sequence[str]) -> np.ndarray:
    """uint64 keys of source contig names (first 8 bytes of their sha256): what the split is drawn from."""
    return np.array([int.from_bytes(hashlib.sha256(str(n).encode()).digest()[:8], "big") for n in names],
                    dtype=np.uint64)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijective scramble of uint64 values (vectorised)."""
    x = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def split_draw(keys: np.ndarray, seed: int) -> np.ndarray:
    """A uniform [0, 1) draw per contig key and seed: a contig is held out when its draw is below the cut."""
    seed_key = np.uint64(int.from_bytes(hashlib.sha256(f"split:{seed}".encode()).digest()[:8], "big"))
    return (_mix64(np.asarray(keys, dtype=np.uint64) ^ seed_key) >> np.uint64(11)).astype(np.float64) / 2.0 ** 53



@dataclass
class Split:
    """Which sub-contigs are held out: those of contigs whose draw is below ``cut`` (by contig, never by gene)."""
    seed: int
    cut: float

    def validation(self, keys: np.ndarray) -> np.ndarray:
        return split_draw(keys, self.seed) < self.cut


def choose_split(corpus, fraction: float, seed: int, items: str = "subcontigs") -> tuple[Split, int, int]:
    """The split for ``fraction`` of contigs, and the numbers of training and validation items (the gLM's
    sub-contigs; ``items="chunks"``: gLM2's chunks of a token corpus store).

    One streaming pass over the item table. A tiny corpus where no contig
    draws below ``fraction`` still holds out the contig with the lowest draw, if
    more than one contig has sub-contigs.
    """
    keys, sub_contig = corpus.array("contigs/key"), corpus.array(f"{items}/contig")
    total = sub_contig.shape[0]
    n_val, lowest, lowest_subs, first, several = 0, np.inf, 0, None, False
    for start in range(0, total, 1 << 20):
        contig = sub_contig[start:start + (1 << 20)]
        lo = int(contig.min())
        draw = split_draw(keys[lo:int(contig.max()) + 1], seed)[contig - lo]
        n_val += int((draw < fraction).sum())
        low = float(draw.min())
        if low < lowest:
            lowest, lowest_subs = low, 0
        if low == lowest:
            lowest_subs += int((draw == low).sum())
        first = int(contig[0]) if first is None else first
        several = several or bool((contig != first).any())
    if fraction > 0 and not n_val and several:
        return Split(seed, float(np.nextafter(lowest, 1.0))), total - lowest_subs, lowest_subs
    return Split(seed, fraction), total - n_val, n_val

