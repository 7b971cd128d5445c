"""`glmkit operons fit|predict|eval`: operons from the gLM's attention (Hwang et al. 2024, Fig. 4).

For every pair of neighbouring genes of a context store (consecutive genes of
a contig), the features are the symmetrised attention between them in every
layer and head, in `layer * heads + head` order as the reference's
operon_logreg.py builds them, taken from the stored window in which the pair
sits most centrally (a pair no window holds whole, possible with
`contextualize --windows reference`, has no attention features). A logistic
regression (scikit-learn) maps them to "same operon".

Beyond the paper, because the gLM never sees distances: the classic operon
signal, the gap between the genes and whether they share a strand, is offered
as a baseline predictor ("distance-strand") and joined with attention
("combined"). `eval` reports all three, cross-validated by contig (or by
blocks of consecutive pairs within a contig when there are fewer contigs than
folds), never by gene pair: neighbouring pairs share a gene and a window, and
splitting them across folds would leak.

Labels: adjacent pairs of genes in the same multi-gene operon are positive;
other adjacent pairs of genes the annotation knows are negative (as in the
reference, where a gene of no operon makes a negative pair); pairs with a gene
the annotation lacks are left out and counted.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from glmkit.errors import GlmkitError, GlmkitUsageError
from glmkit.io.files import atomic_outputs, claim_outputs
from glmkit.options import KINDS, OperonOptions

log = logging.getLogger("glmkit")
PAIR_COLUMNS = ("contig", "gene_a", "gene_b", "relation", "distance", "probability", "call")


LOG_ATTENTION_FLOOR = 1e-3          # log(a + floor): a head that ignores a gene stays finite


# -- neighbouring pairs and their features ------------------------------------------------------------------------

@dataclass
class Pairs:
    """Neighbouring genes (a, a + 1) of a context store, with their coordinates from the element stores."""
    ids: np.ndarray          # (genes,) object: every gene id of the context store
    a: np.ndarray            # (pairs,) int64: index of the first gene (the second is a + 1)
    contig: np.ndarray       # (pairs,) object: contig name
    source: np.ndarray       # (genes,) object: the assembly's sequence name (coordinates are on it)
    strand: np.ndarray       # (genes,) int8
    start: np.ndarray        # (genes,) int64
    end: np.ndarray          # (genes,) int64
    names: list | None = None          # (genes,) an annotation's names of each gene (locus tag, gene, synonyms)
    annotated: np.ndarray | None = None  # (genes,) bool: the gene comes from an annotation (`glmkit genes`)

    def __post_init__(self):
        self.names = [()] * len(self.ids) if self.names is None else self.names
        self.annotated = np.zeros(len(self.ids), bool) if self.annotated is None else self.annotated

    def __len__(self) -> int:
        return len(self.a)

    @property
    def distance(self) -> np.ndarray:
        """bp between the two genes (negative: they overlap)."""
        return self.start[self.a + 1] - self.end[self.a] - 1

    @property
    def relation(self) -> np.ndarray:
        sa, sb = self.strand[self.a], self.strand[self.a + 1]
        return np.where(sa == sb, "same", np.where(sa > 0, "convergent", "divergent")).astype(object)


def neighbour_pairs(context, element_paths: Sequence[str]) -> Pairs:
    from glmkit.io.elements import CDS, ElementStore

    ids = context.gene_ids()
    where = {gene: i for i, gene in enumerate(ids)}
    n = len(ids)
    strand, start, end = np.zeros(n, np.int8), np.zeros(n, np.int64), np.zeros(n, np.int64)
    source = np.empty(n, object)
    found, annotated = np.zeros(n, bool), np.zeros(n, bool)
    names: list = [()] * n
    for path in element_paths:
        columns = ("id", "type", "strand", "start", "end", "locus_tag", "gene", "synonyms")
        for batch in ElementStore(path).batches(columns=columns):
            e = batch.elements
            contig_of = np.repeat(np.arange(len(batch.counts)), batch.counts)
            for i in np.flatnonzero(e["type"] == CDS):
                g = where.get(e["id"][i])
                if g is not None:
                    strand[g], start[g], end[g] = e["strand"][i], e["start"][i], e["end"][i]
                    source[g], found[g] = batch.contigs["source"][contig_of[i]], True
                    annotated[g] = batch.contigs["model"][contig_of[i]] == "annotation"
                    names[g] = tuple(x for x in (e["locus_tag"][i], e["gene"][i], *e["synonyms"][i].split(","))
                                     if x)
    if not found.all():
        missing = ids[np.flatnonzero(~found)[0]]
        raise GlmkitError(f"{context.path}: gene {missing} is in no element store given (pass the element stores "
                          f"that contextualize read)")
    contig_of_gene = context.gene_contigs()
    a = np.flatnonzero(contig_of_gene[:-1] == contig_of_gene[1:])
    contig_names = context.contig_names()
    return Pairs(ids, a, contig_names[contig_of_gene[a]], source, strand, start, end, names, annotated)


def attention_features(context, pairs: Pairs) -> np.ndarray:
    """(pairs, layers * heads) float32: attention between the two genes in the window where the pair is most
    central; NaN rows for pairs no window holds whole."""
    first, size = context.windows()
    layers, heads = int(context.config["num_layers"]), int(context.config["num_heads"])
    out = np.full((len(pairs), layers * heads), np.nan, np.float32)
    best_window = np.full(len(pairs), -1, np.int64)
    best_score = np.full(len(pairs), -1, np.int64)
    last = np.searchsorted(first, pairs.a, side="right") - 1  # the last window starting at or before gene a
    for back in (3, 2, 1, 0):  # windows overlap by half: at most three hold a gene; earliest first wins ties
        w = last - back
        ok = w >= 0
        wc = np.where(ok, w, 0)
        inside = ok & (first[wc] <= pairs.a) & (pairs.a + 1 < first[wc] + size[wc])
        score = np.minimum(pairs.a - first[wc], first[wc] + size[wc] - 1 - (pairs.a + 1))
        better = inside & (score > best_score)
        best_score[better], best_window[better] = score[better], w[better]
    have = np.flatnonzero(best_window >= 0)
    order = have[np.argsort(best_window[have], kind="stable")]
    windows = best_window[order]
    bounds = np.flatnonzero(np.diff(windows)) + 1
    groups = dict(zip(windows[np.r_[0, bounds]] if len(windows) else [], np.split(order, bounds)))
    for w, maps in context.attention(np.array(list(groups), np.int64)):
        rows = groups[w]
        p = pairs.a[rows] - first[w]
        out[rows] = maps[:, :, p, p + 1].transpose(2, 0, 1).reshape(len(rows), -1)
    return out


def distance_features(pairs: Pairs) -> np.ndarray:
    """The classic operon signal, for a linear model: same strand, and (on the same strand) the gap in a few
    shapes: scaled, overlapping, short, log."""
    d = pairs.distance.astype(np.float64)
    same = (pairs.relation == "same").astype(np.float64)
    return np.stack([same, same * np.clip(d, -200, 1000) / 100, same * (d < 0), same * (d <= 40),
                     same * np.log1p(np.clip(d, 0, None))], 1)


def with_log(attention: np.ndarray) -> np.ndarray:
    """(pairs, 2F): each head's attention, then its log. A logistic regression on both is linear in a and log a,
    so it can weigh a pair whose attention is a small share of a long operon's against one of a 2-gene operon,
    which raw attention alone puts far apart (docs/benchmarks.md)."""
    return np.concatenate([attention, np.log(attention + LOG_ATTENTION_FLOOR)], 1)


def features(kind: str, context, pairs: Pairs, log_attention: bool = False) -> np.ndarray:
    if kind == "distance-strand":
        return distance_features(pairs)
    attention = attention_features(context, pairs)
    attention = with_log(attention) if log_attention else attention
    return attention if kind == "attention" else np.concatenate([attention, distance_features(pairs)], 1)


# -- labels -------------------------------------------------------------------------------------------------------

def pair_labels(pairs: Pairs, known_path: str, annotation_path: str | None) -> tuple[np.ndarray, dict]:
    """Per pair 1 (same operon), 0 (not) or NaN (not known), and a report of what could not be matched."""
    from glmkit.io.operon_sets import read_annotation, read_known_operons

    known = read_known_operons(known_path)
    gene_of_name: dict[str, list[int]] = {}
    report: dict = {}
    annotated = pairs.annotated.copy()   # genes of an annotation's element store carry their names
    for g in np.flatnonzero(annotated):
        for name in pairs.names[g]:
            gene_of_name.setdefault(name, []).append(g)
    if annotation_path:
        called = {(src, int(s), int(e if s > 0 else b)): g for g, (src, s, b, e) in
                  enumerate(zip(pairs.source, pairs.strand, pairs.start, pairs.end))}
        unmatched_cds = 0
        for cds in read_annotation(annotation_path):
            g = called.get((cds.seqid, cds.strand, cds.stop))
            if g is None:
                unmatched_cds += 1
                continue
            annotated[g] = True
            for name in cds.names:
                gene_of_name.setdefault(name, []).append(g)
        report["annotation_cds_not_called"] = unmatched_cds
        report["called_genes_not_annotated"] = int((~annotated).sum())
    for g, gene_id in enumerate(pairs.ids):  # element ids name genes too
        gene_of_name.setdefault(gene_id, []).append(g)
    y = np.full(len(pairs), np.nan)
    index = {int(a): k for k, a in enumerate(pairs.a)}
    if known.operons is not None:
        if not annotation_path and not annotated.any():
            raise GlmkitUsageError("--annotation is needed with an operon set of gene names (RegulonDB) and genes "
                                   "glmkit called: it carries the names to coordinates, and so to the called genes "
                                   "(an element store from `glmkit genes` carries them itself)")
        operon_of = {}
        names_total = names_missing = 0
        for k, genes in enumerate(known.operons):
            for name in genes:
                names_total += 1
                hits = gene_of_name.get(name)
                if not hits:
                    names_missing += 1
                    continue
                for g in hits:
                    operon_of.setdefault(g, set()).add(k)
        multi = {k for k, genes in enumerate(known.operons) if len(genes) > 1}
        a = pairs.a
        both = annotated[a] & annotated[a + 1]
        y[both] = 0.0
        for k, g in enumerate(a):
            shared = operon_of.get(int(g), set()) & operon_of.get(int(g) + 1, set()) & multi
            if shared and both[k]:
                y[k] = 1.0
        report.update(operon_genes=names_total, operon_genes_not_matched=names_missing)
    else:
        bad = 0
        for ga, gb, label in known.pairs:
            ha, hb = gene_of_name.get(ga, []), gene_of_name.get(gb, [])
            hit = [index.get(min(x, z)) for x in ha for z in hb if abs(x - z) == 1]
            hit = [h for h in hit if h is not None]
            if not hit:
                bad += 1
                continue
            y[hit[0]] = float(label)
        report["pairs_given"] = len(known.pairs)
        report["pairs_not_neighbours_or_not_found"] = bad
    report.update(pairs=len(pairs), labelled=int(np.isfinite(y).sum()), positive=int((y == 1).sum()))
    if not report["labelled"]:
        raise GlmkitError(f"{known_path}: no neighbouring gene pair of the context could be labelled from it "
                          f"(wrong genome, or the annotation's sequence names differ from the assembly's?)")
    if report["positive"] == 0 or report["positive"] == report["labelled"]:
        raise GlmkitError(f"{known_path}: the labelled pairs are all of one class ({report['positive']} positive "
                          f"of {report['labelled']}); a classifier needs both")
    return y, report


# -- fitting and cross-validation ---------------------------------------------------------------------------------

def cv_groups(pairs: Pairs, folds: int) -> np.ndarray:
    """Fold groups: contigs, or when there are fewer contigs than folds, consecutive blocks of each contig's pairs."""
    names, contig = np.unique(pairs.contig.astype(str), return_inverse=True)
    if len(names) >= folds:
        return contig
    groups = np.zeros(len(pairs), np.int64)
    for c in range(len(names)):
        rows = np.flatnonzero(contig == c)
        groups[rows] = c * folds + (np.arange(len(rows)) * folds) // max(1, len(rows))
    return groups


def _model(seed: int):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=2000, random_state=seed)


def cross_validate(X: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int, seed: int):
    """Out-of-fold probabilities and the average precision of each fold (grouped folds)."""
    from sklearn.metrics import average_precision_score
    from sklearn.model_selection import GroupKFold

    if len(np.unique(groups)) < folds:
        raise GlmkitError(f"--folds {folds}: only {len(np.unique(groups))} groups of pairs to split")
    proba = np.full(len(y), np.nan)
    per_fold = []
    for train, test in GroupKFold(n_splits=folds).split(X, y, groups):
        if len(np.unique(y[train])) < 2 or len(np.unique(y[test])) < 2:
            continue
        model = _model(seed).fit(X[train], y[train])
        proba[test] = model.predict_proba(X[test])[:, 1]
        per_fold.append(average_precision_score(y[test], proba[test]))
    return proba, np.array(per_fold)


# -- the three subcommands ----------------------------------------------------------------------------------------

def _load(context_path: str, element_paths: Sequence[str], kind: str):
    from glmkit.io.context import ContextStore
    from glmkit.io.store import require_distinct

    require_distinct(element_paths)
    context = ContextStore(context_path)
    if kind != "distance-strand":
        context.require_attention()
    pairs = neighbour_pairs(context, element_paths)
    if not len(pairs):
        raise GlmkitError(f"{context_path}: no contig has two genes: no neighbouring pairs")
    return context, pairs


def run_fit(context_path: str, element_paths: Sequence[str], known: str, annotation: str | None, output: str,
            options: OperonOptions = OperonOptions(), force: bool = False) -> dict:
    with claim_outputs([output], force, [context_path, *element_paths, known, *filter(None, [annotation])]):
        return _fit(context_path, element_paths, known, annotation, output, options, force)


def _fit(context_path, element_paths, known, annotation, output, options: OperonOptions, force: bool) -> dict:
    from glmkit.io.operon_model import write_classifier

    context, pairs = _load(context_path, element_paths, options.features)
    y, report = pair_labels(pairs, known, annotation)
    X = features(options.features, context, pairs, options.log_attention)
    use = np.isfinite(y) & np.isfinite(X).all(1)
    model = _model(options.seed).fit(X[use], y[use])
    with atomic_outputs([output], force, [context_path, *element_paths, known, *filter(None, [annotation])]) as (tmp,):
        write_classifier(tmp, options.features, model.coef_, model.intercept_,
                         context.config.get("num_layers"), context.config.get("num_heads"),
                         {"report": report, "fitted_on": int(use.sum())}, context.attention_queries,
                         options.log_attention and options.features != "distance-strand")
    log.info(f"operons fit: {options.features} classifier on {use.sum():,} labelled pairs "
             f"({int(y[use].sum()):,} same-operon); {_matching(report)}")
    return {"report": report, "pairs": int(use.sum())}


def _matching(report: dict) -> str:
    parts = [f"{k.replace('_', ' ')} {v:,}" for k, v in report.items() if k not in ("pairs", "labelled", "positive")]
    return "; ".join(parts) if parts else "all matched"


def run_predict(context_path: str, element_paths: Sequence[str], classifier_path: str, output: str,
                gff: str | None = None, options: OperonOptions = OperonOptions(), force: bool = False) -> dict:
    with claim_outputs([output, gff], force, [context_path, *element_paths, classifier_path]):
        return _predict(context_path, element_paths, classifier_path, output, gff, options, force)


def _predict(context_path, element_paths, classifier_path, output, gff, options: OperonOptions, force: bool) -> dict:
    from glmkit.io.operon_model import read_classifier
    from glmkit.io.tsv import write_tsv

    clf = read_classifier(classifier_path)
    context, pairs = _load(context_path, element_paths, clf["kind"])
    if clf["kind"] != "distance-strand" and clf["attention_queries"] != context.attention_queries:
        raise GlmkitError(f"{clf['path']}: fitted on {clf['attention_queries']}-query attention; {context_path} holds "
                          f"{context.attention_queries}-query maps (contextualize --attention-queries "
                          f"{clf['attention_queries']})")
    X = features(clf["kind"], context, pairs, clf["log_attention"])
    if X.shape[1] != len(clf["coef"]):
        layers, heads = context.config.get("num_layers"), context.config.get("num_heads")
        raise GlmkitError(f"{clf['path']}: a classifier of {len(clf['coef'])} features; {context_path} gives "
                          f"{X.shape[1]} ({clf['kind']}; its model has {layers} layers x {heads} heads)")
    with np.errstate(over="ignore"):
        p = 1.0 / (1.0 + np.exp(-(X @ clf["coef"] + clf["intercept"])))
    call = np.where(np.isfinite(p), (p >= options.threshold).astype(object), None)
    distance, relation = pairs.distance, pairs.relation
    ids = pairs.ids
    with atomic_outputs([output, gff], force, [context_path, *element_paths, classifier_path]) as (tmp, tmp_gff):
        with open(tmp, "w") as fh:
            write_tsv(fh, PAIR_COLUMNS, ((pairs.contig[k], ids[a], ids[a + 1], relation[k], int(distance[k]),
                                          None if not np.isfinite(p[k]) else round(float(p[k]), 6), call[k])
                                         for k, a in enumerate(pairs.a)))
        if tmp_gff is not None:
            with open(tmp_gff, "w") as fh:
                n_operons = _write_operon_gff(fh, pairs, p, call)
    n_linked = int(sum(c is True for c in call))
    log.info(f"operons predict: {len(pairs):,} neighbouring pairs, {n_linked:,} called same-operon"
             + (f"; {n_operons:,} operons in {gff}" if gff else ""))
    return {"pairs": len(pairs), "linked": n_linked}


def _write_operon_gff(fh, pairs: Pairs, p: np.ndarray, call: np.ndarray) -> int:
    """Runs of genes linked pair by pair, as GFF3 `operon` features (2+ genes) on the assembly's sequences."""
    from glmkit.io.gff import GffRecord, write_gff3

    records, n = [], 0
    linked = [c is True for c in call]
    k = 0
    while k < len(pairs):
        if not linked[k]:
            k += 1
            continue
        first = k
        while k + 1 < len(pairs) and linked[k + 1] and pairs.a[k + 1] == pairs.a[k] + 1:
            k += 1
        genes = np.arange(pairs.a[first], pairs.a[k] + 2)
        n += 1
        records.append(GffRecord(str(pairs.source[genes[0]]), "glmkit", "operon", int(pairs.start[genes].min()),
                                 int(pairs.end[genes].max()), float(np.min(p[first:k + 1])),
                                 _strand_of(pairs.strand[genes]), ".",
                                 {"ID": f"operon_{n}", "genes": ",".join(map(str, pairs.ids[genes])),
                                  "contig": str(pairs.contig[first])}))
        k += 1
    write_gff3(fh, [], records)
    return n


def _strand_of(strands: np.ndarray) -> str:
    return "." if len(set(strands.tolist())) > 1 else ("+" if strands[0] > 0 else "-")


def run_eval(context_path: str, element_paths: Sequence[str], known: str, annotation: str | None, output: str,
             options: OperonOptions = OperonOptions(), force: bool = False) -> dict:
    """Cross-validated average precision of the attention, distance-strand and combined predictors; PR curves;
    the per-head correlation of attention with operon membership as a layer x head map; the best head."""
    with claim_outputs([output], force, [context_path, *element_paths, known, *filter(None, [annotation])]):
        return _eval(context_path, element_paths, known, annotation, output, options, force)


def _eval(context_path, element_paths, known, annotation, output, options: OperonOptions, force: bool) -> dict:
    from sklearn.metrics import average_precision_score

    from glmkit.io.context import ContextStore
    from glmkit.io.tsv import write_tsv

    context = ContextStore(context_path)
    context.require_attention()
    pairs = neighbour_pairs(context, element_paths)
    y, report = pair_labels(pairs, known, annotation)
    attention = attention_features(context, pairs)
    X = {"attention": with_log(attention) if options.log_attention else attention,
         "distance-strand": distance_features(pairs)}
    X["combined"] = np.concatenate([X["attention"], X["distance-strand"]], 1)
    use = np.isfinite(y) & np.isfinite(attention).all(1)  # the same pairs for every predictor
    groups = cv_groups(pairs, options.folds)[use]
    yu = y[use]
    results, curves = {}, {}
    for kind in KINDS:
        proba, per_fold = cross_validate(X[kind][use], yu, groups, options.folds, options.seed)
        ok = np.isfinite(proba)
        results[kind] = {"ap_mean": float(per_fold.mean()), "ap_sd": float(per_fold.std()),
                         "ap_pooled": float(average_precision_score(yu[ok], proba[ok])), "folds": len(per_fold)}
        curves[kind] = (yu[ok], proba[ok])
    layers, heads = int(context.config["num_layers"]), int(context.config["num_heads"])
    r = _pearson(attention[use], yu).reshape(layers, heads)
    best = np.unravel_index(int(np.nanargmax(r)), r.shape)
    head_ap = float(average_precision_score(yu, attention[use][:, best[0] * heads + best[1]]))
    summary = {"pairs": report, "evaluated_pairs": int(use.sum()), "positive": int(yu.sum()),
               "folds": options.folds, "grouped_by": "contig" if len(np.unique(pairs.contig.astype(str))) >=
               options.folds else "blocks of consecutive pairs within contigs",
               "attention_queries": context.attention_queries, "log_attention": options.log_attention,
               "predictors": results,
               "best_head": {"layer": int(best[0]) + 1, "head": int(best[1]) + 1, "pearson_r": float(r[best]),
                             "ap": head_ap}}
    with atomic_outputs([output], force, [context_path, *element_paths, known, *filter(None, [annotation])]) as (tmp,):
        tmp.mkdir(parents=True)
        with open(tmp / "report.tsv", "w") as fh:
            write_tsv(fh, ("predictor", "ap_mean", "ap_sd", "ap_pooled", "folds", "pairs", "positive"),
                      ((k, round(v["ap_mean"], 4), round(v["ap_sd"], 4), round(v["ap_pooled"], 4), v["folds"],
                        int(use.sum()), int(yu.sum())) for k, v in results.items()))
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2))
        np.savetxt(tmp / "head_correlation.tsv", r, delimiter="\t", fmt="%.5f",
                   header="Pearson r of attention with same-operon; rows: layers 1..L, columns: heads 1..H")
        _plots(tmp, curves, results, r, best)
    log.info(f"operons eval: {use.sum():,} pairs ({int(yu.sum()):,} same-operon), {options.folds} folds by "
             f"{summary['grouped_by']}; {context.attention_queries}-query attention"
             f"{' and its log' if options.log_attention else ''}; AP "
             + ", ".join(f"{k} {v['ap_mean']:.3f}" for k, v in results.items())
             + f"; best head L{best[0] + 1}-H{best[1] + 1} (r {r[best]:.3f}); {_matching(report)}")
    return summary


def _pearson(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    xc, yc = X - X.mean(0), y - y.mean()
    denominator = np.sqrt((xc ** 2).sum(0) * (yc ** 2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (xc * yc[:, None]).sum(0) / denominator, np.nan)


def _plots(folder: Path, curves: dict, results: dict, r: np.ndarray, best) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve

    fig, ax = plt.subplots(figsize=(5, 5))
    for kind, (truth, proba) in curves.items():
        precision, recall, _ = precision_recall_curve(truth, proba)
        ax.step(recall, precision, where="post", label=f"{kind} (AP {results[kind]['ap_mean']:.2f})")
    ax.set(xlabel="Recall", ylabel="Precision", xlim=(0, 1), ylim=(0, 1.02), title="Operon pairs, cross-validated")
    ax.legend(loc="lower left", fontsize="small")
    fig.tight_layout()
    fig.savefig(folder / "pr.png", dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(1.5 + 0.35 * r.shape[1], 1.5 + 0.3 * r.shape[0]))
    image = ax.pcolor(r, cmap="Blues")
    ax.set_xticks(np.arange(r.shape[1]) + 0.5, np.arange(1, r.shape[1] + 1))
    ax.set_yticks(np.arange(r.shape[0]) + 0.5, np.arange(1, r.shape[0] + 1))
    ax.set(xlabel="Head", ylabel="Layer", title=f"Pearson r; best L{best[0] + 1}-H{best[1] + 1}")
    fig.colorbar(image, ax=ax, fraction=0.05)
    fig.tight_layout()
    fig.savefig(folder / "heads.png", dpi=120)
    plt.close(fig)
