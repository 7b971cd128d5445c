"""`glmkit embed`: context-free ESM2 protein embeddings, one per distinct sequence.

Per protein: the mean over residues (BOS/EOS excluded) of one layer's hidden
states (default the last, after ESM2's final LayerNorm), as fair-esm's
extract.py computes it. Proteins longer than ``max_residues`` (default 1022,
fair-esm's) are truncated, or with ``long="window"`` cut into windows of
``max_residues`` overlapping by half: each residue's state is averaged over the
windows that hold it, then averaged over the protein.

Work is planned as rows (distinct sequences: rows copied from embedding stores
given as inputs first, then new ones sorted by length) written in chunks of
``chunk_rows``; within a chunk, sequences are batched under a token budget.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from glmkit.data.embedding_plan import EmbedPlan, plan_embed
from glmkit.errors import GlmkitError, GlmkitUsageError
from glmkit.io.embeddings import ResumableEmbeddingWriter, model_differences
from glmkit.io.files import atomic_outputs, claim_outputs
from glmkit.io.proteins import collect_inputs
from glmkit.io.tsv import write_tsv
from glmkit.log import progress
from glmkit.stop import with_hint
from glmkit.options import EmbedOptions

log = logging.getLogger("glmkit")

MAP_COLUMNS = ("element_id", "protein_hash", "embedding_hash")


# -- inputs ------------------------------------------------------------------------------------------------

# -- computing ---------------------------------------------------------------------------------------------

def _segments(length: int, max_residues: int, long: str) -> list[tuple[int, int, np.ndarray]]:
    """(start, end, per-residue weights) whose weighted sums add up to the protein's mean embedding."""
    if length <= max_residues or long == "truncate":
        n = min(length, max_residues)
        return [(0, n, np.full(n, 1.0 / n))]
    stride = max_residues // 2
    starts = list(range(0, length - max_residues, stride)) + [length - max_residues]
    cover = np.zeros(length)
    for s in starts:
        cover[s:s + max_residues] += 1
    weights = 1.0 / (cover * length)
    return [(s, s + max_residues, weights[s:s + max_residues]) for s in starts]


def embed_sequences(model, sequences: Sequence[bytes], options: EmbedOptions, layer: int, device, dtype,
                    bar=None) -> np.ndarray:
    """Mean-pooled embeddings (n, dim) float32 of ``sequences``, batched under the token budget."""
    import torch

    from glmkit.models.esm2.tokens import tokenize

    segments = [(i, s, e, w) for i, seq in enumerate(sequences)
                for s, e, w in _segments(len(seq), options.max_residues, options.long)]
    last_segment = {i: k for k, (i, *_) in enumerate(segments)}
    order = sorted(range(len(segments)), key=lambda k: segments[k][2] - segments[k][1])
    out = np.zeros((len(sequences), model.cfg.embed_dim), dtype=np.float64)
    batch: list[int] = []

    def run(batch: list[int]) -> None:
        parts = [sequences[segments[k][0]][segments[k][1]:segments[k][2]] for k in batch]
        tokens = tokenize(parts, options.max_residues)                 # (B, T)
        weights = np.zeros(tokens.shape, dtype=np.float32)             # (B, T): 0 on BOS, EOS and padding
        for b, k in enumerate(batch):
            w = segments[k][3]
            weights[b, 1:len(w) + 1] = w
        padded = min(min(map(len, parts)), options.max_residues) + 2 < tokens.shape[1]   # known here: no device read
        with torch.inference_mode():
            hidden = model(tokens.to(device), layer, padded)          # (B, T, D)
            pooled = torch.einsum("btd,bt->bd", hidden.float(), torch.from_numpy(weights).to(device))
        pooled = pooled.cpu().numpy()
        for b, k in enumerate(batch):
            out[segments[k][0]] += pooled[b]
        if bar is not None:
            bar.update(sum(last_segment[segments[k][0]] == k for k in batch))

    for k in order:
        width = segments[k][2] - segments[k][1] + 2
        if batch and width * (len(batch) + 1) > options.max_tokens:  # lengths ascend: width is the batch's max
            run(batch)
            batch = []
        batch.append(k)
    if batch:
        run(batch)
    return out.astype(np.float32)


# -- the command -------------------------------------------------------------------------------------------

def _in_shard(h: str, shard: tuple[int, int] | None) -> bool:
    return shard is None or int(h[:15], 16) % shard[1] == shard[0] - 1


def run_embed(inputs: Sequence[str], output: str, map_path: str | None = None,
              options: EmbedOptions = EmbedOptions(), force: bool = False) -> dict:
    if options.shard and map_path:
        raise GlmkitUsageError("--map goes with the run that merges the shard stores, not with --shard")
    if options.shard and options.cluster_id is not None:
        raise GlmkitUsageError("--cluster-id cannot be combined with --shard: cluster first, then shard")
    if options.import_embeddings:
        clash = [flag for flag, given in (("--model", options.model), ("--cluster-id", options.cluster_id is not None),
                                          ("--shard", options.shard)) if given]
        if clash:
            raise GlmkitUsageError(f"--import-embeddings cannot be combined with {clash[0]}")
        if not options.import_model:
            raise GlmkitUsageError("--import-embeddings needs --import-model: the model that computed them "
                                   "(e.g. esm2_t33_650M_UR50D)")
    elif options.import_ids or options.import_model:
        raise GlmkitUsageError("--import-ids and --import-model go with --import-embeddings")
    mmseqs = None
    if options.cluster_id is not None:
        from glmkit.genome.mmseqs import find_mmseqs

        mmseqs = find_mmseqs()  # before any work
    read = [*inputs, *filter(None, [options.model, options.import_embeddings, options.import_ids])]
    with claim_outputs([output, map_path], force, read):   # every path read (a model named by path too)
        return _embed(inputs, output, map_path, options, force, mmseqs)


def _embed(inputs: Sequence[str], output: str, map_path: str | None, options: EmbedOptions, force: bool,
           mmseqs=None) -> dict:
    proteins, sequences, stores, records = collect_inputs(inputs, options.nucleotide_check)
    representative = {h: h for h in sequences}
    if options.cluster_id is not None:
        from glmkit.genome.mmseqs import linclust

        representative = linclust(mmseqs, sequences, options.cluster_id, options.coverage, options.threads)
        log.info(f"embed: {len(sequences):,} distinct proteins in {len(set(representative.values())):,} clusters "
                 f"at {options.cluster_id:.0%} identity, {options.coverage:.0%} coverage")
    plan = plan_embed(stores, sequences, representative, (representative[h] for _, h in proteins),
                      lambda h: _in_shard(h, options.shard))

    loaded, model_attrs, imported = None, None, None
    if options.import_embeddings:
        imported, model_attrs, source_of = _imported(options, proteins, plan)
        records.append(_import_record(options.import_embeddings))
    elif options.model is not None or plan.new:
        if options.model is None:
            raise GlmkitUsageError(f"--model is required: {len(plan.new):,} proteins have no embedding in the "
                                   f"stores given")
        loaded, model_attrs = _load(options)
    else:
        model_attrs = stores[0].model if stores else None
        if model_attrs is None:
            raise GlmkitUsageError("nothing to embed and no model given")
    for store in stores:
        differs = model_differences(store.model, model_attrs)
        if differs:
            what = "; ".join(f"{k} {store.model.get(k)} there, {model_attrs.get(k)} now" for k in differs)
            raise GlmkitError(f"{store.path}: embeddings were made with other settings ({what})")

    parameters = {k: v for k, v in asdict(options).items() if k != "model"}
    if mmseqs is not None:   # which MMseqs2 clustered the proteins (path, version)
        parameters["mmseqs"] = mmseqs.record()
    computation = {k: v for k, v in asdict(options).items() if k not in ("model", "shard")}   # rows: planned
    if loaded is not None:
        computation.update(device=str(loaded.device), precision=str(loaded.dtype))
    writer = ResumableEmbeddingWriter(output, parameters, records, plan.rows(), model_attrs["embed_dim"],
                                      options.dtype, model_attrs, options.chunk_rows, computation)
    threads = contextlib.nullcontext()
    if loaded is not None and loaded.device.type == "cpu":
        from glmkit.models.device import torch_threads

        threads = torch_threads(options.threads)
    try:
        pending = writer.pending()
        todo = sum(max(0, r.stop - max(r.start, plan.n_copied)) for r in map(writer.rows, pending))
        log.info(f"embed: {len(proteins):,} proteins, {len(sequences):,} distinct; {plan.n_copied:,} from stores "
                 f"given, {len(plan.new):,} to embed"
                 f"{f' (shard {options.shard[0]}/{options.shard[1]})' if options.shard else ''}"
                 f"; {todo:,} left in {len(pending)} of {writer.n_chunks} chunks")
        started = time.perf_counter()
        with threads, progress(total=todo, desc="embed", unit="proteins") as bar:
            for k in pending:
                rows = writer.rows(k)
                chunk = np.zeros((len(rows), model_attrs["embed_dim"]), dtype=np.float32)
                split = max(0, min(rows.stop, plan.n_copied) - rows.start)  # copied rows come first
                if split < len(rows):
                    fresh = [plan.new[r - plan.n_copied] for r in range(rows.start + split, rows.stop)]
                    if imported is not None:
                        chunk[split:] = [imported.vector(source_of[h]) for h in fresh]
                        bar.update(len(fresh))
                    else:
                        chunk[split:] = embed_sequences(loaded.model, [sequences[h] for h in fresh], options,
                                                        model_attrs["layer"], loaded.device, loaded.dtype, bar)
                for i, positions, store_rows in plan.copied(rows.start, rows.stop):
                    chunk[positions] = stores[i].read_rows(store_rows)
                stored = chunk.astype(options.dtype)
                bad = np.flatnonzero(~np.isfinite(stored).all(1))
                if len(bad):   # never stored as if they were results (fp16 overflows to inf too)
                    raise GlmkitError(f"{output}: {len(bad)} embedding(s) of chunk {k} are NaN or infinite in "
                                      f"{options.dtype}; the model's weights or --precision/--dtype cannot give "
                                      f"them")
                writer.write_chunk(k, stored)
    except BaseException as e:
        writer.discard_if_empty()  # a work folder is kept only if it holds finished chunks to resume from
        if isinstance(e, KeyboardInterrupt) and writer.work.exists():
            raise with_hint(e, f"{int(writer.done.sum())} of {writer.n_chunks} chunks are kept in {writer.work}: "
                               f"the same command resumes from them") from None
        raise
    elapsed = time.perf_counter() - started
    writer.publish(records)
    if map_path:
        with atomic_outputs([map_path], force) as (tmp,):
            with open(tmp, "w") as fh:
                write_tsv(fh, MAP_COLUMNS, ((pid, h, representative[h]) for pid, h in proteins))
    if todo:
        log.info(f"embed: {todo:,} proteins in {elapsed:.2f} s ({todo / elapsed:.1f} proteins/s)")
    return {"proteins": len(proteins), "distinct": len(sequences), "embedded": todo, "reused": plan.n_copied,
            "seconds": elapsed}


def _imported(options: EmbedOptions, proteins: list[tuple[str, str]], plan: EmbedPlan):
    """The imported embeddings, the model attributes the user stated, and for each hash to fill the row of the
    imported file that holds it. Every imported id must name an input protein, and every protein without a row
    in the stores given must have an imported embedding."""
    from glmkit.io.imported_embeddings import ImportedEmbeddings

    imported = ImportedEmbeddings(options.import_embeddings, options.layer, options.import_ids)
    ids = {pid for pid, _ in proteins}
    stray = next((i for i in imported.ids if i not in ids), None)
    if stray is not None:
        raise GlmkitError(f"{options.import_embeddings}: protein '{stray}' has no sequence in the inputs (ids must "
                          f"match the FASTA or element store ids)")
    source_of: dict[str, int] = {}
    for pid, h in proteins:
        if pid in imported.index:
            source_of.setdefault(h, imported.index[pid])
    wanted = set(plan.new)
    missing = next((pid for pid, h in proteins if h in wanted and h not in source_of), None)
    if missing is not None:
        raise GlmkitError(f"{options.import_embeddings}: no embedding for protein '{missing}'")
    if imported.layer is None:
        raise GlmkitUsageError("--layer: say which layer of the model the imported embeddings are from")
    attrs = {"name": options.import_model, "sha256": None, "source": f"imported: {options.import_embeddings}",
             "num_layers": None, "embed_dim": int(imported.dim), "attention_heads": None,
             "layer": int(imported.layer), "max_residues": None, "long": None, "pooling": "mean"}
    log.info(f"embed: importing {len(imported):,} embeddings ({imported.dim} dims, {options.import_model} layer "
             f"{imported.layer}) from {options.import_embeddings}")
    return imported, attrs, source_of


def _import_record(path: str) -> dict:
    """Provenance of imported embeddings: a file's sha256; a folder of per-protein files by path and count."""
    from glmkit.io.files import file_sha256

    p = Path(path)
    if p.is_dir():
        return {"path": str(p.resolve()), "files": sum(1 for _ in p.glob("*.pt"))}
    return {"path": str(p.resolve()), "sha256": file_sha256(p)}


@dataclass
class _Loaded:
    model: object
    device: object
    dtype: object


def _load(options: EmbedOptions):
    from glmkit.models.device import resolve_device, resolve_precision
    from glmkit.models.esm2.weights import load_esm2

    device = resolve_device(options.device)
    dtype = resolve_precision(options.precision, device)
    loaded = load_esm2(options.model)
    cfg = loaded.model.cfg
    layer = cfg.num_layers if options.layer is None else options.layer
    if not 0 <= layer <= cfg.num_layers:
        raise GlmkitUsageError(f"--layer {layer}: {loaded.name} has layers 0 to {cfg.num_layers}")
    model = loaded.model.to(device=device, dtype=dtype)
    attrs = {"name": loaded.name, "sha256": loaded.sha256, "source": loaded.source, "num_layers": cfg.num_layers,
             "embed_dim": cfg.embed_dim, "attention_heads": cfg.attention_heads, "layer": layer,
             "max_residues": options.max_residues, "long": options.long, "pooling": "mean"}
    log.info(f"embed: {loaded.name} ({cfg.num_layers} layers, dim {cfg.embed_dim}) on {device}, {dtype}, layer {layer}")
    return _Loaded(model, device, dtype), attrs
