"""`glmkit filter`: the OMG corpus quality rules, and gLM sub-contigs.

Rules, applied per contig in this order (each threshold is an option; the
defaults are the OMG paper's):

0. duplicate           (--keep) contigs marked 0 in a keep column of a
                       `glmkit dedup semantic` table are dropped whole.
1. short-contig        contigs shorter than 2,000 bp are dropped whole.
2. edge-cds / edge-igs a contig that starts (ends) with an interrupted CDS loses
                       that CDS; one that starts (ends) with an IGS loses the IGS
                       and the CDS next to it. Only the contig's own two ends.
3. invalid-characters  an element with more than 20 % invalid characters (X in
                       a protein; anything but A, C, G, T in an IGS) is removed
                       and the contig is split there.
   long-cds / long-igs a CDS over 15,000 aa or an IGS over 4,000 bp likewise.
4. chunk               a piece of more than 1,000 elements is cut into
                       consecutive chunks of 1,000 (the last one shorter).
5. few-elements / few-cds  pieces with fewer than 7 elements or 3 CDS are dropped.
6. (--glm-subcontigs) each piece is cut into non-overlapping runs of 30 genes,
                       each spanning its first to its last CDS with the IGS
                       between them; runs of fewer than 15 genes are dropped
                       (short-subcontig) and the IGS between runs go
                       (subcontig-boundary).

Thresholds are inclusive on the keeping side: exactly 2,000 bp, exactly 20 %
invalid, exactly 15,000 aa, 4,000 bp, 7 elements, 3 CDS are all kept. Element
ids are the source store's; output contigs are named source:start-end.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from dataclasses import asdict


from glmkit.io.elements import TYPE_NAMES, ElementStore, ElementStoreWriter
from glmkit.io.files import atomic_outputs
from glmkit.io.store import store_record
from glmkit.io.tsv import write_tsv
from glmkit.log import plural, progress
from glmkit.genome.omg import RULES, ContigView, filter_contig
from glmkit.options import FilterOptions

log = logging.getLogger("glmkit")

REPORT_COLUMNS = ("contig", "element_id", "type", "start", "end", "strand", "rule", "action")


def run_filter(input: str, output: str, report: str | None = None, options: FilterOptions = FilterOptions(),
               force: bool = False) -> dict:
    """Filter the element store ``input`` into ``output``; returns counts per rule."""
    store = ElementStore(input)
    duplicates, listed = set(), 0
    if options.keep:
        from glmkit.io.dedup import read_dropped

        duplicates, listed, column = read_dropped(options.keep, options.keep_column)
        log.info(f"filter: {options.keep}: {plural(len(duplicates), 'contig')} of {listed:,} marked 0 in {column}")
    removed, split, dropped_contigs = Counter(), Counter(), Counter()
    n_out_contigs = n_out_elements = 0
    found_duplicates = 0
    with atomic_outputs([output, report], force, [input, *filter(None, [options.keep])]) as (store_tmp, report_tmp), contextlib.ExitStack() as files, \
            progress(total=store.n_contigs, desc="filter", unit="contigs") as bar:
        writer = ElementStoreWriter(store_tmp, asdict(options), [store_record(input)])
        report_out = files.enter_context(open(report_tmp, "w")) if report_tmp else None
        if report_out:
            write_tsv(report_out, REPORT_COLUMNS, [])  # the header; rows follow batch by batch
        for batch in store.batches():
            e, offsets = batch.elements, batch.offsets
            contig_rows, element_rows, report_rows = [], [], []
            for ci in range(batch.n_contigs):
                lo, hi = offsets[ci], offsets[ci + 1]
                view = ContigView(int(batch.contigs["length"][ci]), e["type"][lo:hi], e["partial_left"][lo:hi],
                                  e["partial_right"][lo:hi], e["nt"][lo:hi], e["aa"][lo:hi])
                contig = batch.contig_row(ci)
                if contig["name"] in duplicates:
                    pieces, events = [], [(i, "duplicate", "removed") for i in range(hi - lo)]
                    found_duplicates += 1
                else:
                    pieces, events = filter_contig(view, options)
                if not pieces:  # credit the rule applied last: the one that left nothing
                    removals = [rule for _, rule, action in events if action == "removed"]
                    dropped_contigs[max(removals, key=RULES.index) if removals else "few-elements"] += 1
                for piece in pieces:
                    rows = lo + piece
                    start, end = int(e["start"][rows].min()), int(e["end"][rows].max())
                    contig_rows.append({**contig, "name": f"{contig['source']}:{start}-{end}", "length": end - start + 1,
                                        "source_start": start, "source_end": end})
                    element_rows.append(rows)
                for i, rule, action in events:
                    (removed if action == "removed" else split)[rule] += 1
                    g = lo + i
                    report_rows.append((contig["name"], e["id"][g], TYPE_NAMES[int(e["type"][g])], e["start"][g],
                                        e["end"][g], int(e["strand"][g]), rule, action))
            out = batch.take(contig_rows, element_rows)
            writer.write(out)
            n_out_contigs += out.n_contigs
            n_out_elements += len(out.elements["id"])
            if report_out:
                write_tsv(report_out, REPORT_COLUMNS, report_rows, header=False)
            bar.update(batch.n_contigs)
        stats = {"contigs_in": store.n_contigs, "elements_in": store.n_elements, "contigs_out": n_out_contigs,
                 "elements_out": n_out_elements, "removed": dict(removed), "split": dict(split)}
        writer.close(summary={"stats": stats})
    if options.keep and found_duplicates < len(duplicates):
        log.warning(f"filter: {len(duplicates) - found_duplicates:,} contigs marked 0 in {options.keep} are not in "
                    f"{input} (deduplicated on another store?)")
    for rule in RULES:
        if removed[rule] or split[rule]:
            n = split[rule] if rule == "chunk" else removed[rule]
            what = f"split {plural(n, 'time')}" if rule == "chunk" else f"removed {plural(n, 'element')}"
            extra = f" ({plural(dropped_contigs[rule], 'contig')} dropped whole)" if dropped_contigs[rule] else ""
            log.info(f"filter: {rule:<19} {what}{extra}")
    log.info(f"filter: kept {plural(n_out_contigs, 'contig')} with {n_out_elements:,} of "
             f"{plural(store.n_elements, 'element')} from {plural(store.n_contigs, 'contig')}")
    return stats

