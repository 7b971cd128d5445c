"""What `glmkit contextualize` computes with a gLM: genes in windows, gene and contig embeddings, attention and
masked predictions (the driver — work folder, groups, resume, publish — is glmkit/commands/contextualize.py's).

Contigs are read in overlapping windows of up to 30 genes, every 15 genes (the
last window flush with the contig's end). Genes near a window's edge see less
context, so each gene keeps the window in which it sits most centrally (the
largest distance to either edge; the first such window on ties). Per gene:
the contextualised embedding (hidden state of `--layer`, default the last);
per contig: the mean of its genes' embeddings. On request, per window: the
attention of every layer and head between its genes, symmetrised (A + A^T)/2
(`--attention-queries masked`: row i of each map from a pass with gene i
masked, the attention that masked-gene training shapes); and per gene, the
model's 4 predictions and likelihoods with that gene alone masked, with its
label, for the paper's absolute accuracy.

The genes are first put in a corpus store (genes with their embeddings in
contig order, glmkit/io/corpus.py) in the work folder; groups of whole contigs
go through the model; the output store is written from the saved groups in
order, and the absolute accuracy computed from it in blocks.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

from glmkit.errors import GlmkitError, GlmkitUsageError
from glmkit.genome.windows import best_windows
from glmkit.io.context import ContextStoreWriter
from glmkit.io.files import atomic_outputs
from glmkit.log import plural

GROUP_WINDOWS = 256  # windows per saved group of contigs (the unit of resume)


class Job:
    """What contextualize does for gLM models: windows of genes, gene and contig embeddings, attention, predictions."""
    unit = "genes"
    group_size = GROUP_WINDOWS

    def __init__(self, loaded, embedding_path, options, device, amp):
        self.meta, self.cfg, self.o, self.embedding_path = loaded.meta, loaded.cfg, options, embedding_path
        self.layer = self.cfg.num_layers if options.layer is None else options.layer
        if not 0 <= self.layer <= self.cfg.num_layers:
            raise GlmkitError(f"--layer {self.layer}: the model has layers 0 to {self.cfg.num_layers}")
        self.runner = _Runner(loaded.model.to(device), loaded.norm, self.cfg, self.layer, options, device, amp)

    @classmethod
    def load(cls, model_path, embedding_path, options, device, amp) -> "Job":
        from glmkit.models.glm.weights import load_glm
        from glmkit.io.embeddings import require_same_model

        loaded = load_glm(model_path)
        require_same_model(loaded.meta.get("embedding_model", {}), embedding_path, loaded.folder)
        return cls(loaded, embedding_path, options, device, amp)

    @staticmethod
    def check(options, embedding_path) -> None:
        if not embedding_path:
            raise GlmkitUsageError("--embeddings is required for gLM models (the ESM2 embeddings of the genes)")
        if options.context != type(options).context:
            raise GlmkitUsageError("--context is an option of gLM2 models, not of the gLM")

    def corpus(self, work: Path, element_paths):
        """The genes in a corpus store in the work folder, with their embeddings in contig order."""
        from glmkit.io.corpus import SCHEMA, CorpusStore
        from glmkit.io.store import reuse_or_build
        from glmkit.models.glm.corpus import build_corpus, corpus_parameters

        size = self.o.window_genes
        return reuse_or_build(work / "corpus.zarr", SCHEMA, CorpusStore,
                              corpus_parameters(element_paths, self.embedding_path, size, 1),
                              lambda temp: build_corpus(element_paths, self.embedding_path, temp, size, 1),
                              what="gLM corpus store", kind="corpus store")

    def groups(self, corpus):
        return _groups(corpus, self.o.window_genes)

    def group(self, corpus, group) -> dict:
        return self.runner.group(corpus, group[0], group[1])

    def write(self, output, force, corpus, groups, work, records, model_path, saved) -> dict:
        return _write_output(output, force, corpus, groups, work, records, self.meta, self.o, self.layer, self.cfg,
                             model_path, saved)

    def describe(self, summary: dict) -> str:
        return (f"{plural(summary['genes'], 'gene')} in {plural(summary['contigs'], 'contig')}, "
                f"{plural(summary['windows'], 'window')}"
                + (f"; absolute accuracy {summary['absolute_accuracy']:.3f}" if self.o.predictions else ""))


def _groups(corpus, window_genes: int) -> list[tuple[int, int, int, int]]:
    """Groups of whole contigs of about GROUP_WINDOWS windows: (first contig, end contig, first gene, end gene)."""
    offsets = corpus.array("contigs/offsets")[:]
    n = np.diff(offsets)
    step = max(1, window_genes // 2)
    windows = np.where(n <= window_genes, (n > 0).astype(np.int64), -(-(n - window_genes) // step) + 1)
    groups, c0, count = [], 0, 0
    for c in range(len(n)):
        count += int(windows[c])
        if count >= GROUP_WINDOWS or c == len(n) - 1:
            groups.append((c0, c + 1, int(offsets[c0]), int(offsets[c + 1])))
            c0, count = c + 1, 0
    return groups


class _Runner:
    """One group of contigs through the model: gene, contig and (on request) attention and prediction arrays."""

    def __init__(self, model, norm, cfg, layer, options, device, amp):
        self.model, self.norm, self.cfg, self.layer = model, norm, cfg, layer
        self.o, self.device, self.amp = options, device, amp

    def _run(self, method, features, segments, **kwargs):
        import torch

        t = lambda a: torch.from_numpy(a).to(self.device)  # noqa: E731
        real_at = np.flatnonzero(segments.ravel() > 0)   # found on the host: the device is not waited for
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.amp,
                                                    enabled=self.amp != torch.float32):
            return method(t(features), t(segments), real_at=t(real_at), **kwargs)

    def group(self, corpus, c0: int, c1: int) -> dict:
        o, cfg = self.o, self.cfg
        offsets = corpus.array("contigs/offsets")[c0:c1 + 1]
        g0, g1 = int(offsets[0]), int(offsets[-1])
        emb, strand = corpus.genes(g0, g1)
        x, labels = self.norm.transform(emb)                                                 # (n, dim), (n, 99)
        orientation = np.where(strand > 0, 0.5, -0.5).astype(np.float32)
        features_all = np.concatenate([x, orientation[:, None]], 1)
        labels_all = np.concatenate([labels, orientation[:, None]], 1)
        n, H = g1 - g0, cfg.hidden_size
        out = {"gene_embedding": np.zeros((n, H), np.float32), "first_gene": [], "n_genes": [], "attention": []}
        if o.predictions:
            out["predictions"] = np.zeros((n, cfg.num_predictions, cfg.label_dim), np.float32)
            out["likelihoods"] = np.zeros((n, cfg.num_predictions), np.float32)
        windows = self._windows(offsets)
        for k in range(0, len(windows), o.batch_size):
            self._batch(windows[k:k + o.batch_size], features_all, g0, out)
        contig_of = np.repeat(np.arange(c1 - c0), np.diff(offsets))
        counts = np.bincount(contig_of, minlength=c1 - c0)
        sums = np.zeros((c1 - c0, H), np.float64)
        np.add.at(sums, contig_of, out["gene_embedding"])
        result = {"gene_embedding": out["gene_embedding"],
                  "contig_embedding": (sums / np.maximum(counts, 1)[:, None]).astype(np.float32),
                  "contig_has_genes": counts > 0, "first_gene": np.asarray(out["first_gene"], np.int64),
                  "n_genes": np.asarray(out["n_genes"], np.int32),
                  "attention": np.concatenate(out["attention"]) if out["attention"] else np.zeros(0, np.float16),
                  "n_windows": np.array(len(windows))}
        if o.predictions:
            result.update(predictions=out["predictions"], likelihoods=out["likelihoods"])
        if o.predictions or o.inputs:
            result.update(labels=labels_all.astype(np.float32))
        if o.inputs:
            result.update(features=features_all.astype(np.float32))
        return result

    def _windows(self, offsets: np.ndarray) -> list[tuple]:
        """The group's windows: (first gene within the group, length, positions in the window of the genes it
        settles, those genes' indices in the group)."""
        g0, windows = int(offsets[0]), []
        for c in range(len(offsets) - 1):
            a, b = int(offsets[c]) - g0, int(offsets[c + 1]) - g0
            spans, window_of, position = best_windows(b - a, self.o.window_genes, self.o.windows)
            for w, (s, t) in enumerate(spans):
                mine = np.flatnonzero(window_of == w)
                windows.append((a + s, t - s, position[mine], a + mine))
        return windows

    def _batch(self, batch: list[tuple], features_all: np.ndarray, g0: int, out: dict) -> None:
        """One batch of windows through the model: its genes' embeddings (and attention, predictions) into ``out``."""
        import torch

        o, cfg = self.o, self.cfg
        width = max(m for _, m, _, _ in batch)   # rows as long as the batch's longest window, not --window-genes
        features = np.zeros((len(batch), width, features_all.shape[1]), np.float32)
        segments = np.zeros((len(batch), width), np.int64)
        for r, (s, m, _, _) in enumerate(batch):
            features[r, :m], segments[r, :m] = features_all[s:s + m], 1
        hidden, attn = self._run(self.model.encode, features, segments, need_weights=o.attention,
                                 layers=None if o.attention else self.layer)
        if o.attention and self.layer != cfg.num_layers:  # maps cover every layer, whatever --layer is
            hidden, _ = self._run(self.model.encode, features, segments, layers=self.layer)
        hidden = hidden.float().cpu().numpy()
        masked_queries = o.attention and o.attention_queries == "masked"
        for r, (s, m, pos, genes) in enumerate(batch):
            out["gene_embedding"][genes] = hidden[r, pos]
            if o.attention:
                a = torch.stack([layer_attn[r, :, :m, :m] for layer_attn in attn]).float()  # (layers, heads, m, m)
            if (o.predictions and len(pos)) or masked_queries:
                masked_maps = self._masked(features[r:r + 1], segments[r:r + 1], m, pos, genes, masked_queries, out)
                if masked_queries:
                    a = masked_maps
            if o.attention:
                out["attention"].append(((a + a.transpose(-1, -2)) / 2).cpu().numpy().astype(np.float16).ravel())
                out["first_gene"].append(g0 + s)
                out["n_genes"].append(m)

    def _masked(self, features, segments, m: int, pos, genes, masked_queries: bool, out: dict):
        """Each gene of one window masked alone (row k of the pass masks position masked[k]): its predictions into
        ``out``, and with masked queries its row of every map (returned: (layers, heads, m, m)), as training shapes
        the attention of a masked gene."""
        import torch

        masked = np.arange(m) if masked_queries else pos
        f = np.repeat(features, len(masked), 0)
        f[np.arange(len(masked)), masked] = -1.0
        _, preds, logits, maps = self._run(self.model, f, np.repeat(segments, len(masked), 0),
                                           need_weights=masked_queries)
        if self.o.predictions and len(pos):
            at = (np.arange(len(pos)) if not masked_queries else pos, pos)
            out["predictions"][genes] = preds.float().cpu().numpy()[at]
            out["likelihoods"][genes] = torch.softmax(logits.float(), -1).cpu().numpy()[at]
        if not masked_queries:
            return None
        k = torch.arange(m)
        a = torch.stack([mp[k, :, k, :m] for mp in maps]).float()  # (layers, m, heads, m)
        return a.transpose(1, 2)                                    # (layers, heads, m, m)


def _write_output(output, force, corpus, groups, work: Path, records, meta, options, layer: int, cfg,
                  model_path: str, saved_group) -> dict:
    """The context store, from the saved groups in order (one group in memory at a time)."""
    summary = {"genes": corpus.n_genes, "contigs": 0, "windows": 0}
    with atomic_outputs([output], force) as (tmp,):
        store = ContextStoreWriter(tmp, {**asdict(options), "layer": layer, "model": model_path}, records,
                                   {"config": meta["config"], "step": meta.get("step"),
                                    "embedding_model": meta.get("embedding_model")},
                                   options.attention_queries if options.attention else None)
        _columns(store, options, cfg)
        attention_end = 0
        for k, group in enumerate(groups):
            saved = saved_group(work / f"group-{k:06d}.npz")
            if saved is None:
                raise GlmkitError(f"{work}: group {k} became unreadable; rerun the command")
            attention_end = _append_group(store, corpus, group, saved, options, cfg, summary, attention_end)
        store.close_columns()
        if options.predictions:
            summary["absolute_accuracy"] = absolute_accuracy_of(store.group)
        store.finish(summary)
    return summary


def _columns(store: ContextStoreWriter, options, cfg) -> None:
    """The columns a gLM's context store holds with these options."""
    H, P, D = cfg.hidden_size, cfg.num_predictions, cfg.label_dim
    store.add("genes/id", str)
    store.add("genes/contig", np.int32)
    store.add("genes/embedding", options.dtype, 4096, (H,))
    store.add("contigs/name", str)
    store.add("contigs/embedding", options.dtype, 4096, (H,))
    if options.predictions:
        store.add("genes/predictions", np.float32, 4096, (P, D))
        store.add("genes/likelihoods", np.float32, 4096, (P,))
    if options.predictions or options.inputs:
        store.add("genes/label", np.float32, 4096, (D,))
    if options.inputs:
        store.add("genes/input", np.float32, 4096, (cfg.input_dim,))
    if options.attention:
        store.add("windows/first_gene", np.int64)
        store.add("windows/n_genes", np.int32)
        store.add("attention/offsets", np.int64)
        store.add("attention/data", np.float16, 1 << 22)
        store.extend("attention/offsets", [0])


def _append_group(store: ContextStoreWriter, corpus, group, saved: dict, options, cfg, summary: dict,
                  attention_end: int) -> int:
    """One saved group's rows appended to every column; returns where the attention data now ends."""
    c0, c1, g0, g1 = group
    names, ids = corpus.array("contigs/name"), corpus.array("genes/id")
    keep = saved["contig_has_genes"]
    contig_index = summary["contigs"] + np.cumsum(keep) - 1  # contigs without genes get no row
    gene_contig = np.repeat(np.arange(c1 - c0), np.diff(corpus.array("contigs/offsets")[c0:c1 + 1]))
    store.extend("genes/id", ids[g0:g1].astype(object))
    store.extend("genes/contig", contig_index[gene_contig])
    store.extend("genes/embedding", saved["gene_embedding"])
    store.extend("contigs/name", names[c0:c1].astype(object)[keep])
    store.extend("contigs/embedding", saved["contig_embedding"][keep])
    summary["contigs"] += int(keep.sum())
    summary["windows"] += int(saved["n_windows"])
    if options.predictions:
        store.extend("genes/predictions", saved["predictions"])
        store.extend("genes/likelihoods", saved["likelihoods"])
    if options.predictions or options.inputs:
        store.extend("genes/label", saved["labels"])
    if options.inputs:
        store.extend("genes/input", saved["features"])
    if options.attention:
        sizes = cfg.num_layers * cfg.num_heads * saved["n_genes"].astype(np.int64) ** 2
        store.extend("windows/first_gene", saved["first_gene"])
        store.extend("windows/n_genes", saved["n_genes"])
        store.extend("attention/offsets", attention_end + np.cumsum(sizes))
        store.extend("attention/data", saved["attention"])
        attention_end += int(sizes.sum())
    return attention_end


def absolute_accuracy_of(group, block: int = 2048) -> float:
    """absolute_accuracy over a context store's predictions, likelihoods and labels, read block by block."""
    predictions, likelihoods, labels = group["genes/predictions"], group["genes/likelihoods"], group["genes/label"]

    def top(a: int, b: int) -> np.ndarray:
        p, likelihood = predictions[a:b], likelihoods[a:b]
        return p[np.arange(len(p)), likelihood.argmax(1)]

    n = labels.shape[0]
    return _absolute_accuracy(top, lambda a, b: labels[a:b], n, block) if n else float("nan")


def absolute_accuracy(predictions: np.ndarray, likelihoods: np.ndarray, labels: np.ndarray,
                      block: int = 2048) -> float:
    """Share of genes whose most likely prediction is at least as near their own label as any other gene's label.

    Distances are taken block by block (``block`` x ``block`` at a time, as ||p||^2 - 2 p.l + ||l||^2), so memory
    does not grow with the number of genes: an (n, n, D) array would be 160 GB at 20,000 genes.
    """
    n = len(labels)
    if not n:
        return float("nan")
    top = predictions[np.arange(n), likelihoods.argmax(1)]
    return _absolute_accuracy(lambda a, b: top[a:b], lambda a, b: labels[a:b], n, block)


def _absolute_accuracy(top_rows, label_rows, n: int, block: int) -> float:
    correct = 0
    for r in range(0, n, block):
        t = np.asarray(top_rows(r, r + block), dtype=np.float64)                       # (b, D)
        own = ((t - np.asarray(label_rows(r, r + block), dtype=np.float64)) ** 2).sum(1)  # (b,)
        t_sq = (t ** 2).sum(1)[:, None]
        nearest_other = np.full(len(t), np.inf)
        for c in range(0, n, block):
            lab = np.asarray(label_rows(c, c + block), dtype=np.float64)
            d = t @ lab.T                                                                # (b, b'), in place below
            d *= -2
            d += t_sq
            d += (lab ** 2).sum(1)[None, :]
            rows = np.arange(max(r, c), min(r + len(t), c + len(lab)))                   # the diagonal, if here
            d[rows - r, rows - c] = np.inf
            np.minimum(nearest_other, d.min(1), out=nearest_other)
        correct += int((own <= nearest_other).sum())
    return correct / n
