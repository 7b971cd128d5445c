"""`glmkit paralog-match`: interacting partners among paralogs by masked prediction (Hwang et al. 2024, Fig. 6).

For each query protein, the gLM sees the paper's three-gene contig
(masked, query, masked), all on one strand. The highest-likelihood of the 4
predictions at each masked position is compared with every candidate's label
(its whitened PCA projection with orientation +0.5, the candidates assumed on
the query's strand); a candidate's distance is the smaller of its distances to
the two predictions (the partner may sit either side). Candidates are ranked
by that distance.

With `--truth` (query, partner pairs), a query is exact-correct when its true
partner ranks first, and cluster-correct when the first candidate lies in the
partner's cluster (MMseqs2 at `--cluster-id`, 50 % by default, over the
candidates). The paper's baseline replaces the predictions by standard-normal
draws: 1,000 draws give the mean and 95 % interval of both counts.
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Sequence

import numpy as np

from glmkit.errors import GlmkitError
from glmkit.io.files import atomic_outputs, claim_outputs
from glmkit.options import ParalogOptions

log = logging.getLogger("glmkit")
COLUMNS = ("query", "rank", "candidate", "distance", "side", "likelihood")


def _proteins(paths: Sequence[str], store, what: str, one: str):
    """(ids, hashes, sequences by hash, embeddings) of the proteins of FASTA files or element stores."""
    from glmkit.io.proteins import collect_inputs

    proteins, sequences, stores, _ = collect_inputs(paths)
    if stores:
        raise GlmkitError(f"{stores[0].path}: {what} must be protein FASTA files or element stores")
    if not proteins:
        raise GlmkitError(f"{', '.join(paths)}: no {what} proteins")
    ids = [p for p, _ in proteins]
    hashes = [h for _, h in proteins]
    rows = store.rows(hashes)
    if (rows < 0).any():
        missing = ids[int(np.flatnonzero(rows < 0)[0])]
        raise GlmkitError(f"{store.path}: no embedding for {one} protein '{missing}' (embed the {what} first)")
    return ids, hashes, sequences, store.read_rows(rows).astype(np.float32)


def predictions(loaded, query_embeddings: np.ndarray, device, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(Q, 2, label_dim) the most likely prediction at the masked positions before and after each query, and
    (Q, 2) its likelihood."""
    import torch

    x, _ = loaded.norm.transform(query_embeddings)
    q = len(x)
    features = np.full((q, 3, x.shape[1] + 1), -1.0, np.float32)   # masked genes: every feature -1
    features[:, 1, :-1], features[:, 1, -1] = x, 0.5
    segments = np.ones((q, 3), np.int64)
    best = np.zeros((q, 2, loaded.cfg.label_dim), np.float32)
    likelihood = np.zeros((q, 2), np.float32)
    with torch.inference_mode():
        for s in range(0, q, batch_size):
            f = torch.from_numpy(features[s:s + batch_size]).to(device)
            _, preds, logits, _ = loaded.model(f, torch.from_numpy(segments[s:s + batch_size]).to(device))
            probs = torch.softmax(logits[:, [0, 2]].float(), -1)                      # (b, 2, 4)
            top = probs.argmax(-1)                                                   # (b, 2)
            chosen = preds[:, [0, 2]].float().gather(2, top[..., None, None].expand(-1, -1, 1, preds.shape[-1]))
            best[s:s + batch_size] = chosen[:, :, 0].cpu().numpy()
            likelihood[s:s + batch_size] = probs.max(-1).values.cpu().numpy()
    return best, likelihood


def candidate_distances(best: np.ndarray, labels: np.ndarray, block: int = 1024):
    """For queries in blocks: (distances (b, C) to the nearer of the two predictions, side (b, C) 0/1)."""
    l2 = (labels.astype(np.float64) ** 2).sum(1)
    for s in range(0, len(best), block):
        p = best[s:s + block].astype(np.float64)                                      # (b, 2, D)
        d = (p ** 2).sum(-1)[..., None] - 2 * p @ labels.T.astype(np.float64) + l2    # (b, 2, C)
        d = np.sqrt(np.maximum(d, 0))
        yield s, d.min(1), d.argmin(1)


def run_paralog_match(queries: Sequence[str], candidates: Sequence[str], embedding_path: str, model_path: str,
                      output: str, truth: str | None = None, report: str | None = None,
                      options: ParalogOptions = ParalogOptions(), force: bool = False) -> dict:
    inputs = [*queries, *candidates, embedding_path, model_path, *filter(None, [truth])]
    mmseqs = None
    if truth and options.cluster_id > 0:   # clusters score the truth: MMseqs2 found before any work
        from glmkit.genome.mmseqs import find_mmseqs

        mmseqs = find_mmseqs()
    with claim_outputs([output, report], force, inputs):
        return _paralog_match(queries, candidates, embedding_path, model_path, output, truth, report, options, force,
                              mmseqs)


def _paralog_match(queries, candidates, embedding_path, model_path, output, truth, report, options, force,
                   mmseqs) -> dict:
    from glmkit.io.embeddings import EmbeddingStore
    from glmkit.io.tsv import write_tsv
    from glmkit.models.device import resolve_device, torch_threads
    from glmkit.models.glm.weights import load_glm
    from glmkit.io.embeddings import require_same_model

    loaded = load_glm(model_path)
    require_same_model(loaded.meta.get("embedding_model", {}), embedding_path, loaded.folder)
    store = EmbeddingStore(embedding_path)
    q_ids, _, _, q_emb = _proteins(queries, store, "queries", "query")
    c_ids, c_hashes, c_sequences, c_emb = _proteins(candidates, store, "candidates", "candidate")
    pairs = _read_truth(truth, q_ids, c_ids) if truth else None
    device = resolve_device(options.device)
    loaded.model.to(device)
    with torch_threads(options.threads) if device.type == "cpu" else contextlib.nullcontext():
        best, likelihood = predictions(loaded, q_emb, device, options.batch_size)
    _, c_labels = loaded.norm.transform(c_emb)
    c_labels = np.concatenate([c_labels, np.full((len(c_labels), 1), 0.5, np.float32)], 1)
    k = min(options.top_k, len(c_ids))
    first = np.zeros(len(q_ids), np.int64)
    side_name = ("upstream", "downstream")
    with atomic_outputs([output], force) as (tmp,):
        with open(tmp, "w") as fh:
            header = True
            for s, d, side in candidate_distances(best, c_labels):
                order = np.argsort(d, axis=1, kind="stable")[:, :k]
                first[s:s + len(d)] = order[:, 0]
                rows = []
                for i in range(len(d)):
                    for r, c in enumerate(order[i]):
                        rows.append((q_ids[s + i], r + 1, c_ids[c], round(float(d[i, c]), 5),
                                     side_name[side[i, c]], round(float(likelihood[s + i, side[i, c]]), 5)))
                write_tsv(fh, COLUMNS, rows, header=header)
                header = False
    summary = {"queries": len(q_ids), "candidates": len(c_ids)}
    if pairs is not None:
        summary.update(_score(pairs, first, best, c_labels, c_ids, c_hashes, c_sequences, options, mmseqs))
        if report:
            with atomic_outputs([report], force) as (tmp,):
                tmp.write_text(json.dumps(summary, indent=2))
        b = summary["random_baseline"]
        log.info(f"paralog-match: {summary['pairs']} queries with a known partner: exact-correct "
                 f"{summary['exact_correct']}"
                 + (f", cluster-correct {summary['cluster_correct']}" if "cluster_correct" in summary else "")
                 + f"; random predictions: exact {b['exact_mean']:.1f} (95% {b['exact_low']:.0f}-"
                   f"{b['exact_high']:.0f})")
    else:
        log.info(f"paralog-match: {len(q_ids):,} queries ranked against {len(c_ids):,} candidates")
    return summary


def _read_truth(path: str, q_ids: list[str], c_ids: list[str]) -> list[tuple[int, int]]:
    from glmkit.io.files import InputFile
    from glmkit.io.tsv import read_tsv

    qi, ci = {q: i for i, q in enumerate(q_ids)}, {c: i for i, c in enumerate(c_ids)}
    pairs = []
    for row in read_tsv(InputFile(path), required=("query", "partner")):
        if row["query"] not in qi:
            raise GlmkitError(f"{path}: query '{row['query']}' is not among the query proteins")
        if row["partner"] not in ci:
            raise GlmkitError(f"{path}: partner '{row['partner']}' is not among the candidate proteins")
        pairs.append((qi[row["query"]], ci[row["partner"]]))
    if not pairs:
        raise GlmkitError(f"{path}: no (query, partner) rows")
    return pairs


def _score(pairs, first, best, c_labels, c_ids, c_hashes, c_sequences, options: ParalogOptions, mmseqs) -> dict:
    q = np.array([p[0] for p in pairs])
    partner = np.array([p[1] for p in pairs])
    out = {"pairs": len(pairs), "exact_correct": int((first[q] == partner).sum())}
    cluster = None
    if options.cluster_id > 0:
        from glmkit.genome.mmseqs import linclust

        distinct = {h: c_sequences[h] for h in dict.fromkeys(c_hashes)}
        representative = linclust(mmseqs, distinct, options.cluster_id, options.coverage, options.threads)
        cluster = np.array([representative[h] for h in c_hashes], object)
        out["cluster_correct"] = int((cluster[first[q]] == cluster[partner]).sum())
        out["clusters"] = len(set(cluster))
        out["mmseqs"] = mmseqs.record()
    rng = np.random.default_rng(options.seed)
    exact, clustered = [], []
    for _ in range(options.draws):
        draw = rng.standard_normal((len(q), 2, best.shape[-1])).astype(np.float32)
        top = np.concatenate([np.argmin(d, 1) for _, d, _ in candidate_distances(draw, c_labels)])
        exact.append(int((top == partner).sum()))
        if cluster is not None:
            clustered.append(int((cluster[top] == cluster[partner]).sum()))
    base = {"draws": options.draws, "exact_per_draw": exact, "exact_mean": float(np.mean(exact)),
            "exact_low": float(np.percentile(exact, 2.5)), "exact_high": float(np.percentile(exact, 97.5))}
    if cluster is not None:
        base.update(cluster_mean=float(np.mean(clustered)), cluster_low=float(np.percentile(clustered, 2.5)),
                    cluster_high=float(np.percentile(clustered, 97.5)))
    out["random_baseline"] = base
    return out
