"""The OMG corpus rules on one contig (Cornman et al. 2024), torch-free: edge elements, short contigs, invalid
characters, overlong elements (the contig split there), chunks of at most --max-elements, too few elements or
CDS, and the gLM's sub-contigs of 15-30 genes. `glmkit filter` applies them store by store."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from glmkit.genome.windows import windows
from glmkit.io.elements import CDS, IGS
from glmkit.options import FilterOptions

RULES = ("duplicate", "short-contig", "edge-cds", "edge-igs", "invalid-characters", "long-cds", "long-igs", "chunk",
         "few-elements", "few-cds", "subcontig-boundary", "short-subcontig")


@dataclass
class ContigView:
    """The elements of one contig (arrays sliced from a batch)."""

    length: int
    type: np.ndarray
    partial_left: np.ndarray
    partial_right: np.ndarray
    nt: np.ndarray
    aa: np.ndarray


def invalid_fraction(element_type: int, nt: bytes, aa: bytes) -> float:
    if element_type == CDS:
        return aa.count(b"X") / len(aa) if aa else 0.0
    return (len(nt) - sum(nt.count(b) for b in (b"A", b"C", b"G", b"T"))) / len(nt) if nt else 0.0


def _runs(keep: np.ndarray, start: int = 0) -> list[np.ndarray]:
    """Maximal runs of consecutive True positions, as index arrays."""
    idx = np.flatnonzero(keep)
    if not len(idx):
        return []
    breaks = np.flatnonzero(np.diff(idx) > 1) + 1
    return [start + run for run in np.split(idx, breaks)]


def filter_contig(c: ContigView, o: FilterOptions) -> tuple[list[np.ndarray], list[tuple[int, str, str]]]:
    """Pieces kept (local element indices) and report events (index, rule, 'removed' | 'split')."""
    n = len(c.type)
    if c.length < o.min_contig_length:
        return [], [(i, "short-contig", "removed") for i in range(n)]
    rule: list[str | None] = [None] * n

    if not o.keep_edges and n:
        for end, partial, step in ((0, c.partial_left, 1), (n - 1, c.partial_right, -1)):
            if c.type[end] == CDS and partial[end]:
                rule[end] = rule[end] or "edge-cds"
            elif c.type[end] == IGS:
                rule[end] = rule[end] or "edge-igs"
                neighbour = end + step
                if 0 <= neighbour < n and c.type[neighbour] == CDS:
                    rule[neighbour] = rule[neighbour] or "edge-igs"

    for i in range(n):
        if rule[i]:
            continue
        if invalid_fraction(c.type[i], c.nt[i], c.aa[i]) > o.max_invalid_fraction:
            rule[i] = "invalid-characters"
        elif c.type[i] == CDS and len(c.aa[i]) > o.max_cds_aa:
            rule[i] = "long-cds"
        elif c.type[i] == IGS and len(c.nt[i]) > o.max_igs_bp:
            rule[i] = "long-igs"
    events = [(i, r, "removed") for i, r in enumerate(rule) if r]

    pieces = []
    for run in _runs(np.array([r is None for r in rule], dtype=bool)):
        for k in range(0, len(run), o.max_elements):
            if k:
                events.append((int(run[k]), "chunk", "split"))
            pieces.append(run[k:k + o.max_elements])

    kept = []
    for piece in pieces:
        n_cds = int((c.type[piece] == CDS).sum())
        if len(piece) < o.min_elements or n_cds < o.min_cds:
            why = "few-elements" if len(piece) < o.min_elements else "few-cds"
            events.extend((int(i), why, "removed") for i in piece)
        elif o.glm_subcontigs:
            kept.extend(_subcontigs(piece, c.type, o, events))
        else:
            kept.append(piece)
    events.sort(key=lambda e: e[0])
    return kept, events


def _subcontigs(piece: np.ndarray, types: np.ndarray, o: FilterOptions, events: list) -> list[np.ndarray]:
    """Non-overlapping runs of ``subcontig_genes`` CDS, each from its first to its last CDS."""
    cds_pos = np.flatnonzero(types[piece] == CDS)  # positions within the piece
    in_run = np.zeros(len(piece), dtype=bool)
    out = []
    for start, end in windows(len(cds_pos), o.subcontig_genes, minimum=1):  # the same cut as pretrain's
        genes = cds_pos[start:end]
        span = np.arange(genes[0], genes[-1] + 1)
        in_run[span] = True
        if len(genes) < o.min_subcontig_genes:
            events.extend((int(piece[i]), "short-subcontig", "removed") for i in span)
        else:
            out.append(piece[span])
    events.extend((int(piece[i]), "subcontig-boundary", "removed") for i in np.flatnonzero(~in_run))
    return out
