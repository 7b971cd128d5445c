"""`glmkit contextualize`: run a trained model over every contig and store what it sees.

The driver every model family shares: the work folder `.OUTPUT.work/` and its
plan (inputs, the model's files, options, the resolved device and
precision), the family's corpus store built there, groups of whole contigs
computed and saved one file each as they finish (the unit of resume), then
the output written from them in order. What a family computes is its context
job (glmkit/models/<family>/context.py: the gLM's windows, attention and
predictions; gLM2's per-element embeddings), chosen by the model folder's
family (glmkit/models/registry.py). Memory is bounded by a group of contigs,
whatever the corpus size. A run killed part-way and restarted with the same
command (the plan must match) reuses the corpus store and every finished group.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np

from glmkit.errors import GlmkitError, GlmkitUsageError
from glmkit.io.checkpoint import checkpoint_folder
from glmkit.io.files import claim_outputs, planned_work_folder, remove
from glmkit.io.store import require_distinct, store_record
from glmkit.log import progress
from glmkit.models.registry import family_of
from glmkit.stop import with_hint
from glmkit.options import ATTENTION_QUERIES, ContextOptions

log = logging.getLogger("glmkit")
TRIM_GROUPS = 8      # groups between two hand-backs of freed memory




def run_contextualize(element_paths, embedding_path, model_path, output, options: ContextOptions = ContextOptions(),
                      force: bool = False) -> dict:
    if options.attention_queries not in ATTENTION_QUERIES:
        raise GlmkitUsageError(f"--attention-queries {options.attention_queries}: expected plain or masked")
    if options.attention_queries != "plain" and not options.attention:
        raise GlmkitUsageError("--attention-queries masked: add --attention (it says how the maps are computed)")
    require_distinct(element_paths)
    job_class = family_of(model_path).part("context").Job
    job_class.check(options, embedding_path)
    inputs = [*element_paths, *([embedding_path] if embedding_path else []), checkpoint_folder(model_path)]
    with claim_outputs([output], force, inputs):  # held to the end
        return _contextualize(job_class, element_paths, embedding_path, model_path, output, options, force)


def _contextualize(job_class, element_paths, embedding_path, model_path, output, options: ContextOptions,
                   force: bool) -> dict:
    """The driver every model shares: the work folder and its plan, groups of contigs computed and saved one by
    one (the unit of resume), then the output written from them. ``job_class`` is what differs by model."""
    from glmkit.resources import release_freed_memory
    from glmkit.models.device import resolve_device, resolve_precision, torch_threads

    device = resolve_device(options.device)
    amp = resolve_precision(options.precision, device)
    job = job_class.load(model_path, embedding_path, options, device, amp)
    records = [store_record(p) for p in (*element_paths, *([embedding_path] if embedding_path else []))]
    # the plan: inputs, the model's files (their checksums), options
    plan = hashlib.sha256(json.dumps([records, job.meta.get("files"), asdict(options), job.layer, job.group_size,
                                      str(device), str(amp)]).encode()).hexdigest()   # "auto" resolved
    work, resumed = planned_work_folder(output, plan)
    if resumed:
        log.info(f"contextualize: resuming from {work} ({len(list(work.glob('group-*.npz')))} groups done)")
    try:
        with torch_threads(options.threads) if device.type == "cpu" else contextlib.nullcontext():
            corpus = job.corpus(work, element_paths)
            groups = job.groups(corpus)
            with progress(total=groups[-1][3] - groups[0][2] if groups else 0, desc="contextualize",
                          unit=job.unit) as bar:
                for k, group in enumerate(groups):
                    path = work / f"group-{k:06d}.npz"
                    if _saved(path) is None:
                        result = job.group(corpus, group)
                        _require_finite(result, output, group)
                        temp = path.with_suffix(".partial.npz")
                        np.savez(temp, **result)
                        os.replace(temp, path)  # a group file exists only once complete
                        del result
                    if k % TRIM_GROUPS == TRIM_GROUPS - 1:
                        # freed buffers back to the OS: under the CLI's kept-buffers setting the holes the groups
                        # leave add up over a long run (at 10^6 genes: live ~370 MB, held 540); not after every
                        # group, where faulting the pages in again costs ~50 ms
                        release_freed_memory()
                    bar.update(group[3] - group[2])
            summary = job.write(output, force, corpus, groups, work, records, str(model_path), _saved)
    except BaseException as e:
        done = len(list(work.glob("group-*.npz")))
        if not done:  # nothing finished: nothing to resume from
            remove(work)
        elif isinstance(e, KeyboardInterrupt):
            raise with_hint(e, f"{done} finished groups are kept in {work}: the same command resumes from them") \
                from None
        raise
    remove(work)
    log.info(f"contextualize: {job.describe(summary)}")
    return summary


def _require_finite(result: dict, output, group) -> None:
    """A group's embeddings and maps must be numbers: NaN out of a model is refused, never published."""
    for name, values in result.items():
        if isinstance(values, np.ndarray) and values.dtype.kind == "f" and not np.isfinite(values).all():
            raise GlmkitError(f"{output}: the model gave NaN or infinite {name.replace('_', ' ')}s (contigs "
                              f"{group[0]} to {group[1] - 1}); its weights or inputs cannot give results")


def _saved(path: Path) -> dict | None:
    """A group saved by an earlier run, or None if there is none or it is unreadable (then it is recomputed)."""
    if not path.exists():
        return None
    try:
        with np.load(path) as saved:
            return dict(saved)
    except Exception as e:  # a damaged file costs a recomputation, never wrong data
        log.warning(f"contextualize: recomputing {path.name}: unreadable ({type(e).__name__})")
        return None
