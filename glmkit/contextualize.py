"""`glmkit contextualize`: run a trained gLM over every contig and store what it sees.

Contigs are read in overlapping windows of up to 30 genes, every 15 genes (the
last window flush with the contig's end). Genes near a window's edge see less
context, so each gene keeps the window in which it sits most centrally (the
largest distance to either edge; the first such window on ties). Per gene:
the contextualised embedding (hidden state of `--layer`, default the last);
per contig: the mean of its genes' embeddings. On request, per window: the
attention of every layer and head between its genes, symmetrised (A + A^T)/2;
and per gene, the model's 4 predictions and likelihoods with that gene alone
masked, with its label, for the paper's absolute accuracy.

Each batch of windows is saved in `.OUTPUT.work/` as it finishes;
the same command after a crash reuses them (the plan — inputs' checksums,
model, options — must match), then the store is published by a rename.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from glmkit.errors import GlmkitError
from glmkit.glm_data import Normalization, load_corpus, make_batch
from glmkit.io.checkpoint import checkpoint_folder, load_checkpoint, load_weights
from glmkit.io.files import atomic_outputs, claim_outputs, remove, work_folder
from glmkit.io.store import ColumnWriter, create_store, finish_store, new_array, store_record
from glmkit.log import plural, progress
from glmkit.stop import with_hint

log = logging.getLogger("glmkit")


@dataclass
class ContextOptions:
    layer: int | None = None
    attention: bool = False
    predictions: bool = False
    window_genes: int = 30
    batch_size: int = 64
    dtype: str = "float32"
    device: str = "auto"
    precision: str = "auto"
    threads: int = 1


def centrality(position: int, length: int) -> int:
    return min(position, length - 1 - position)


def run_contextualize(element_paths, embedding_path, model_path, output, options: ContextOptions = ContextOptions(),
                      force: bool = False) -> dict:
    inputs = [*element_paths, embedding_path, checkpoint_folder(model_path)]
    with claim_outputs([output], force, inputs):  # held to the end
        return _contextualize(element_paths, embedding_path, model_path, output, options, force)


def _contextualize(element_paths, embedding_path, model_path, output, options: ContextOptions, force: bool) -> dict:
    import torch

    from glmkit.models.device import resolve_device, resolve_precision
    from glmkit.models.glm import GLM, GLMConfig
    from glmkit.pretrain import ARCHITECTURE

    meta, weights, norm_arrays, _ = load_checkpoint(model_path, ARCHITECTURE)
    cfg = GLMConfig.from_dict(meta.get("config"), checkpoint_folder(model_path) / "config.json")
    layer = cfg.num_layers if options.layer is None else options.layer
    if not 0 <= layer <= cfg.num_layers:
        raise GlmkitError(f"--layer {layer}: the model has layers 0 to {cfg.num_layers}")
    corpus = load_corpus(element_paths, embedding_path, options.window_genes, 1, overlap=True)
    trained_on = meta.get("embedding_model", {})
    for key in ("name", "sha256", "embed_dim", "layer"):
        if trained_on.get(key) != corpus.model.get(key):
            raise GlmkitError(f"{embedding_path}: embeddings from {corpus.model.get('name')} ({key} "
                              f"{corpus.model.get(key)}), but the model was trained on {trained_on.get('name')} "
                              f"({key} {trained_on.get(key)})")
    device = resolve_device(options.device)
    amp = resolve_precision(options.precision, device)
    if device.type == "cpu":
        torch.set_num_threads(max(1, options.threads))
    model = GLM(cfg)
    load_weights(model, weights, checkpoint_folder(model_path) / "model.safetensors")
    model = model.to(device).eval()
    norm = Normalization(**{k: v.numpy() for k, v in norm_arrays.items()})
    standardized = norm.standardize(corpus.embeddings)
    labels = norm.labels(standardized)

    # each gene's best window: genes are identified by id; windows list genes in contig order
    best: dict[str, tuple[int, int, int]] = {}   # gene id -> (centrality, window, position)
    order: list[str] = []
    contig_of: dict[str, str] = {}
    for w, sc in enumerate(corpus.subcontigs):
        for p, gene in enumerate(sc.gene_ids):
            score = centrality(p, len(sc.gene_ids))
            if gene not in best:
                order.append(gene)
                contig_of[gene] = sc.contig
                best[gene] = (score, w, p)
            elif score > best[gene][0]:
                best[gene] = (score, w, p)
    row_of_gene = {g: i for i, g in enumerate(order)}
    H, n = cfg.hidden_size, len(order)
    gene_emb = np.zeros((n, H), np.float32)
    predictions = np.zeros((n, cfg.num_predictions, cfg.label_dim), np.float32) if options.predictions else None
    likelihoods = np.zeros((n, cfg.num_predictions), np.float32) if options.predictions else None
    gene_labels = np.zeros((n, cfg.label_dim), np.float32) if options.predictions else None
    attention_parts: list[np.ndarray] = []
    L_H = cfg.num_layers * cfg.num_heads

    def run(method, features, segments, **kwargs):
        t = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
        with torch.inference_mode(), torch.autocast(device.type, dtype=amp, enabled=amp != torch.float32):
            return method(t(features), t(segments), **kwargs)

    windows_meta: list[tuple[int, int]] = []
    work = work_folder(output)
    records = [store_record(p) for p in (*element_paths, embedding_path)]
    plan = hashlib.sha256(json.dumps([records, store_record(checkpoint_folder(model_path))["sha256"],
                                      asdict(options), layer]).encode()).hexdigest()
    if (work / "plan.txt").exists() and (work / "plan.txt").read_text() == plan:
        log.info(f"contextualize: resuming from {work} ({len(list(work.glob('chunk-*.npz')))} chunks done)")
    else:
        remove(work)
        work.mkdir(parents=True)
        (work / "plan.txt").write_text(plan)

    def compute(idx: list[int]) -> dict[str, np.ndarray]:
        """One batch of windows -> the rows it settles, as arrays (the unit saved for resume)."""
        features, target, segments = make_batch(corpus, [[i] for i in idx], standardized, labels, options.window_genes)
        # attention maps cover every layer, whatever --layer the embeddings come from
        hidden, attn = run(model.encode, features, segments, need_weights=options.attention,
                           layers=None if options.attention else layer)
        if options.attention and layer != cfg.num_layers:
            hidden, _ = run(model.encode, features, segments, layers=layer)
        hidden = hidden.float().cpu().numpy()
        out = {"rows": [], "embedding": [], "first_gene": [], "n_genes": [], "attention": [],
               "predictions": [], "likelihoods": [], "labels": []}
        for b, w in enumerate(idx):
            sc = corpus.subcontigs[w]
            mine = [p for p, g in enumerate(sc.gene_ids) if best[g][1] == w]  # genes settled by this window
            out["rows"] += [row_of_gene[sc.gene_ids[p]] for p in mine]
            out["embedding"] += [hidden[b, p] for p in mine]
            if options.attention:
                m = len(sc.gene_ids)
                a = torch.stack([layer_attn[b, :, :m, :m] for layer_attn in attn]).float()  # (layers, heads, m, m)
                out["attention"].append(((a + a.transpose(-1, -2)) / 2).cpu().numpy().astype(np.float16).ravel())
                out["first_gene"].append(row_of_gene[sc.gene_ids[0]])
                out["n_genes"].append(m)
            if options.predictions and mine:  # each gene masked alone, in its best window
                f = np.repeat(features[b:b + 1], len(mine), 0)
                for r, p in enumerate(mine):
                    f[r, p] = -1.0
                _, preds, logits, _ = run(model, f, np.repeat(segments[b:b + 1], len(mine), 0))
                preds, probs = preds.float().cpu().numpy(), torch.softmax(logits.float(), -1).cpu().numpy()
                out["predictions"] += [preds[r, p] for r, p in enumerate(mine)]
                out["likelihoods"] += [probs[r, p] for r, p in enumerate(mine)]
                out["labels"] += [target[b, p] for p in mine]
        arrays = {k: np.asarray(v) for k, v in out.items() if k != "attention"}
        arrays["attention"] = np.concatenate(out["attention"]) if out["attention"] else np.zeros(0, np.float16)
        return arrays

    try:
        with progress(total=len(corpus.subcontigs), desc="contextualize", unit="windows") as bar:
            for k in range(0, len(corpus.subcontigs), options.batch_size):
                idx = list(range(k, min(k + options.batch_size, len(corpus.subcontigs))))
                chunk = work / f"chunk-{k // options.batch_size:06d}.npz"
                result = _saved(chunk)
                if result is None:
                    result = compute(idx)
                    temp = chunk.with_suffix(".partial.npz")
                    np.savez(temp, **result)
                    os.replace(temp, chunk)  # a chunk file exists only once complete
                rows = result["rows"].astype(np.int64)
                if len(rows):
                    gene_emb[rows] = result["embedding"]
                    if options.predictions:
                        predictions[rows], likelihoods[rows] = result["predictions"], result["likelihoods"]
                        gene_labels[rows] = result["labels"]
                if options.attention:
                    sizes = L_H * result["n_genes"].astype(np.int64) ** 2
                    attention_parts.extend(np.split(result["attention"], np.cumsum(sizes)[:-1]))
                    windows_meta.extend(zip(result["first_gene"].tolist(), result["n_genes"].tolist()))
                bar.update(len(idx))
    except BaseException as e:
        done = len(list(work.glob("chunk-*.npz")))
        if not done:  # nothing finished: nothing to resume from
            remove(work)
        elif isinstance(e, KeyboardInterrupt):
            raise with_hint(e, f"{done} finished batches are kept in {work}: the same command resumes from them") \
                from None
        raise

    contigs = list(dict.fromkeys(contig_of[g] for g in order))
    contig_index = {c: i for i, c in enumerate(contigs)}
    gene_contig = np.array([contig_index[contig_of[g]] for g in order], np.int32)
    contig_emb = np.stack([gene_emb[gene_contig == i].mean(0) for i in range(len(contigs))])
    summary = {"genes": n, "contigs": len(contigs), "windows": len(corpus.subcontigs)}
    if options.predictions:
        summary["absolute_accuracy"] = absolute_accuracy(predictions, likelihoods, gene_labels)

    with atomic_outputs([output], force) as (tmp,):
        group = create_store(tmp, "glmkit.context", {**asdict(options), "layer": layer, "model": str(model_path)},
                             records)
        group.attrs.update({"model": {"config": meta["config"], "step": meta.get("step"),
                                      "embedding_model": trained_on}, "summary": summary})
        write = lambda name, data, chunk: new_array(group, name, data=data, chunks=chunk)  # noqa: E731
        write("genes/id", np.array(order, dtype=np.dtypes.StringDType()), (1 << 16,))
        write("genes/contig", gene_contig, (1 << 16,))
        write("genes/embedding", gene_emb.astype(options.dtype), (4096, H))
        write("contigs/name", np.array(contigs, dtype=np.dtypes.StringDType()), (1 << 16,))
        write("contigs/embedding", contig_emb.astype(options.dtype), (4096, H))
        if options.predictions:
            write("genes/predictions", predictions, (4096, cfg.num_predictions, cfg.label_dim))
            write("genes/likelihoods", likelihoods, (4096, cfg.num_predictions))
            write("genes/label", gene_labels, (4096, cfg.label_dim))
        if options.attention:
            write("windows/first_gene", np.array([w[0] for w in windows_meta], np.int64), (1 << 16,))
            write("windows/n_genes", np.array([w[1] for w in windows_meta], np.int32), (1 << 16,))
            sizes = np.array([len(a) for a in attention_parts], np.int64)
            write("attention/offsets", np.concatenate([[0], np.cumsum(sizes)]), (1 << 16,))
            writer = ColumnWriter(group, "attention/data", np.float16, 1 << 22)
            for a in attention_parts:
                writer.extend(a)
            writer.close()
        finish_store(group)
    remove(work)
    log.info(f"contextualize: {plural(n, 'gene')} in {plural(len(contigs), 'contig')}, "
             f"{plural(len(corpus.subcontigs), 'window')}"
             + (f"; absolute accuracy {summary['absolute_accuracy']:.3f}" if options.predictions else ""))
    return summary


def _saved(chunk: Path) -> dict | None:
    """A batch saved by an earlier run, or None if there is none or it is unreadable (then it is recomputed)."""
    if not chunk.exists():
        return None
    try:
        with np.load(chunk) as saved:
            return dict(saved)
    except Exception as e:  # a damaged file costs a recomputation, never wrong data
        log.warning(f"contextualize: recomputing {chunk.name}: unreadable ({type(e).__name__})")
        return None


def absolute_accuracy(predictions: np.ndarray, likelihoods: np.ndarray, labels: np.ndarray,
                      block: int = 2048) -> float:
    """Share of genes whose most likely prediction is at least as near their own label as any other gene's label.

    Distances are taken block by block (``block`` x ``block`` at a time, as ||p||^2 - 2 p.l + ||l||^2), so memory
    does not grow with the number of genes: an (n, n, D) array would be 160 GB at 20,000 genes.
    """
    n = len(labels)
    if not n:
        return float("nan")
    top = predictions[np.arange(n), likelihoods.argmax(1)].astype(np.float64)        # (n, D)
    lab = labels.astype(np.float64)
    lab_sq = (lab ** 2).sum(1)
    correct = 0
    for r in range(0, n, block):
        t = top[r:r + block]                                                         # (b, D)
        own = ((t - lab[r:r + block]) ** 2).sum(1)                                   # (b,)
        t_sq = (t ** 2).sum(1)[:, None]
        nearest_other = np.full(len(t), np.inf)
        for c in range(0, n, block):
            d = t @ lab[c:c + block].T                                                # (b, b'), in place below
            d *= -2
            d += t_sq
            d += lab_sq[None, c:c + block]
            rows = np.arange(max(r, c), min(r + len(t), c + block))                   # the diagonal, if in this block
            d[rows - r, rows - c] = np.inf
            np.minimum(nearest_other, d.min(1), out=nearest_other)
        correct += int((own <= nearest_other).sum())
    return correct / n
