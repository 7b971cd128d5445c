"""The demo's stages: every step of the pipeline on inputs that need no download, and models that visibly learn
(`glmkit demo` runs them in its work folder and publishes the result: glmkit/commands/demo.py).

Two kinds of input, said apart everywhere the demo reports:

- **Real genomes** that ship inside the pyrodigal wheel go through call,
  filter, embed, contextualize, jacobian and dedup. The protein language
  model is a random-weight ESM2 built here with fair-esm's own class (or a
  real one with ``--plm``): these stages show the pipeline working, and
  their embeddings, attention and contacts carry no biology.
- **A synthetic corpus whose grammar is planted** (glmkit.data.synthetic: gene
  families with embeddings, operons in conserved order, interacting partner
  pairs, residues from a chain, promoter and Shine-Dalgarno motifs in the
  intergenic DNA) is where the gLM and gLM2 are trained, because there is
  something to learn and the answers are known. Every figure of it stands
  beside its baseline, and the summary's ``learned`` column says whether it
  beat it (the thresholds are in ``LEARNED``). Training stops by step count,
  not by the clock, with a fixed seed: the same run on any machine.

The demo ends with a summary table (stage, output, seconds, one key figure
with its baseline, learned) in the log and in summary.tsv, PNGs, and an
index.html that shows them.
"""

from __future__ import annotations

import html
import json
import logging
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

from glmkit.options import DemoOptions
from glmkit.models.esm2.weights import write_random_esm2

log = logging.getLogger("glmkit")

# A metagenomic SPAdes contig, a 20 kb scaffold and an 870 kb draft contig, each a real assembly.
DEMO_GENOMES = ("SRR492066.fna.gz", "KK037166.fna.gz", "MIIJ01000039.fna.gz")
# "well below" for the gLM's validation loss: at most this share of both its first validation and the baseline
LOSS_SHARE = 0.9
LEARNED = {
    "pretrain gLM (synthetic)": f"last validation loss at most {LOSS_SHARE:g} x both the first validation's and the "
                                f"mean-label baseline's",
    "masked genes (synthetic, held out)": "pseudo-accuracy above both baselines",
    "operons (synthetic, held out)": "AP from attention above distance+strand's",
    "paralog-match (synthetic, held out)": "exact matches above the random predictions' 95 % interval",
    "pretrain gLM2 (synthetic)": "validation perplexity below the unigram's, amino acids and nucleotides",
}


@dataclass
class Stage:
    name: str
    output: str
    figure: str
    seconds: float
    learned: str = "-"           # yes / no against the stage's baseline (LEARNED); "-": no learning claim


@dataclass
class Sizes:
    """What --quick changes: sizes only, never what a stage does."""

    esm2: tuple[int, int, int]          # random ESM2: layers, dim, heads
    corpus: dict                        # SyntheticSpec fields
    glm_steps: int
    glm2_steps: int
    jacobian_residues: int              # of each of two proteins
    fast_jacobian: bool
    val_every: dict = field(default_factory=dict)


SIZES = {
    # full: esm2_t6_8M's shape; 120 training genomes of 150 genes; about 5 minutes on 2 cores
    False: Sizes((6, 320, 20), dict(train_genomes=120, test_genomes=20, genes_per_genome=150), glm_steps=3000,
                 glm2_steps=2000, jacobian_residues=60, fast_jacobian=False, val_every={"glm": 100, "glm2": 100}),
    True: Sizes((2, 64, 4), dict(train_genomes=24, test_genomes=4, genes_per_genome=90), glm_steps=150,
                glm2_steps=60, jacobian_residues=40, fast_jacobian=True, val_every={"glm": 50, "glm2": 20}),
}
# the planted grammar (glmkit/data/synthetic.py), the same at both sizes; 64-dimensional family embeddings keep it fast
GRAMMAR = dict(families=150, operon_templates=30, operon_presence=0.8, subfamilies=8, paralog_pairs=6, dim=64,
               protein_grammar="markov", intergenic=True, seed=0)
# the gLM: the tiny preset widened to hidden 128 with 4 heads (bench/glm_learning.py's), at its learning rate
GLM_SHAPE = dict(preset="tiny", hidden_size=128, num_heads=4, lr=3e-3, warmup_steps=25, batch_size=32)
GLM2_SHAPE = dict(preset="tiny", context=256, batch_size=8)


class DemoPipeline:
    """The stages, in order; each returns (its main output, one key figure[, learned: bool])."""

    def __init__(self, out: Path, options: DemoOptions):
        self.out, self.o = out, options
        self.size = SIZES[options.quick]
        self.p = {name: out / name for name in (
            "elements.zarr", "genes.gff", "proteins.faa", "filtered.zarr", "filter_report.tsv", "subcontigs.zarr",
            "subcontigs_report.tsv", "embeddings.zarr", "genes.tsv", "synthetic", "glm", "synthetic_context.zarr",
            "attention.png", "operons", "partners", "partners.png", "glm2", "context.zarr", "pair.faa",
            "contacts.npy", "dedup", "protein_clusters")}
        self.s = self.p["synthetic"]

    def stages(self):
        return [("call", self.call), ("filter", self.filter), ("embed", self.embed),
                ("synthetic corpus", self.synthetic), ("pretrain gLM (synthetic)", self.pretrain_glm),
                ("masked genes (synthetic, held out)", self.masked_genes),
                ("contextualize (synthetic, held out)", self.contextualize_synthetic),
                ("operons (synthetic, held out)", self.operons),
                ("paralog-match (synthetic, held out)", self.paralogs),
                ("pretrain gLM2 (synthetic)", self.pretrain_glm2),
                ("contextualize (real, gLM2)", self.contextualize_real), ("jacobian", self.jacobian),
                ("dedup semantic", self.dedup), ("dedup proteins", self.proteins)]

    # -- real genomes: the pipeline's plumbing ------------------------------------------------------------------

    def call(self):
        from glmkit.commands.call import CallOptions, run_call

        data = files("pyrodigal.tests") / "data"
        genomes = self.out / "genomes"   # copied out of the wheel: the docs' examples start from them
        genomes.mkdir(exist_ok=True)
        for name in DEMO_GENOMES:
            (genomes / name).write_bytes((data / name).read_bytes())
        stats = run_call([str(genomes / name) for name in DEMO_GENOMES], str(self.p["elements.zarr"]),
                         gff=str(self.p["genes.gff"]), proteins=str(self.p["proteins.faa"]),
                         options=CallOptions(threads=self.o.threads))
        return "elements.zarr", f"{stats['cds']:,} genes in {len(DEMO_GENOMES)} genomes"

    def filter(self):
        from glmkit.commands.filter import FilterOptions, run_filter

        run_filter(str(self.p["elements.zarr"]), str(self.p["filtered.zarr"]), report=str(self.p["filter_report.tsv"]))
        stats = run_filter(str(self.p["elements.zarr"]), str(self.p["subcontigs.zarr"]),
                           report=str(self.p["subcontigs_report.tsv"]), options=FilterOptions(glm_subcontigs=True))
        return "subcontigs.zarr", f"{stats['contigs_out']} gLM sub-contigs of 15-30 genes"

    def embed(self):
        from glmkit.commands.embed import EmbedOptions, run_embed

        if self.o.plm:
            self.plm = self.o.plm
        else:
            (self.out / "models").mkdir(exist_ok=True)
            self.plm = str(self.out / "models" / "esm2_random.pt")
            write_random_esm2(Path(self.plm), *self.size.esm2)
        stats = run_embed([str(self.p["subcontigs.zarr"])], str(self.p["embeddings.zarr"]),
                          map_path=str(self.p["genes.tsv"]),
                          options=EmbedOptions(model=self.plm, device=self.o.device, threads=self.o.threads))
        return "embeddings.zarr", f"{stats['distinct']:,} distinct proteins embedded"

    # -- the synthetic corpus: where the models learn ------------------------------------------------------------

    def synthetic(self):
        from glmkit.data.synthetic import SyntheticSpec, write_corpus

        summary = write_corpus(self.s, SyntheticSpec(**GRAMMAR, **self.size.corpus))
        c = self.size.corpus
        return "synthetic/", (f"{summary['genes']:,} genes in {c['train_genomes']} training and {c['test_genomes']} "
                              f"held-out genomes; {summary['same_operon_pairs'] / summary['pairs']:.0%} of "
                              f"neighbouring pairs in planted operons")

    def _pretrain(self, elements, embeddings, output, arch: str, **kw) -> dict:
        """Train; returns the first and the last validated rows of log.tsv."""
        from glmkit.commands.pretrain import PretrainOptions, run_pretrain

        steps = self.size.glm_steps if arch == "glm" else self.size.glm2_steps
        run_pretrain([str(elements)], str(embeddings) if embeddings else None, str(output),
                     PretrainOptions(arch=arch, max_steps=steps, val_every=self.size.val_every[arch],
                                     checkpoint_every=steps, log_every=min(50, steps), device=self.o.device,
                                     threads=self.o.threads, **kw))
        rows = [line.split("\t") for line in (Path(output) / "log.tsv").read_text().splitlines()]
        validated = [dict(zip(rows[0], r)) for r in rows[1:] if r[rows[0].index("val_loss")]]
        return {"first": {k: _number(v) for k, v in validated[0].items()},
                "last": {k: _number(v) for k, v in validated[-1].items()}}

    def pretrain_glm(self):
        run = self._pretrain(self.s / "train.zarr", self.s / "embeddings.zarr", self.p["glm"], "glm", **GLM_SHAPE)
        first, last = run["first"], run["last"]
        loss, baseline = last["val_loss"], last["val_mean_label_loss"]
        learned = loss <= LOSS_SHARE * min(first["val_loss"], baseline)
        return "glm/curves.png", (f"validation loss {loss:.3f} at step {last['step']:.0f} (first validation "
                                  f"{first['val_loss']:.3f} at step {first['step']:.0f}; mean-label baseline "
                                  f"{baseline:.3f})"), learned

    def masked_genes(self):
        from glmkit.pipeline.learning import masked_gene_accuracy

        acc = masked_gene_accuracy(self.s / "test.zarr", self.s / "embeddings.zarr", self.p["glm"],
                                   self.s / "held_out")
        best = max(acc["mean_label"], acc["neighbour_copy"])
        return "-", (f"pseudo-accuracy {acc['model']:.3f} of {acc['masked_genes']} masked genes (mean-label baseline "
                     f"{acc['mean_label']:.3f}, neighbour-copy {acc['neighbour_copy']:.3f})"), acc["model"] > best

    def contextualize_synthetic(self):
        from glmkit.commands.contextualize import ContextOptions, run_contextualize

        for queries, path in (("masked", self.p["synthetic_context.zarr"]),
                              ("plain", self.out / "synthetic_context_plain.zarr")):
            run_contextualize([str(self.s / "test.zarr")], str(self.s / "embeddings.zarr"), str(self.p["glm"]),
                              str(path), ContextOptions(attention=True, attention_queries=queries,
                                                        device=self.o.device, threads=self.o.threads))
        n = _plot_operon_attention(self.p["synthetic_context.zarr"], self.s / "test.pairs.tsv", self.p["attention.png"])
        return "synthetic_context.zarr", f"{n:,} held-out genes; masked-query and plain attention; attention.png"

    def operons(self):
        from glmkit.commands.operons import OperonOptions, run_eval

        ap = {}
        for context, output, log_attention in ((self.p["synthetic_context.zarr"], self.p["operons"], True),
                                               (self.out / "synthetic_context_plain.zarr", self.out / "operons_plain",
                                                False)):
            summary = run_eval(str(context), [str(self.s / "test.zarr")], str(self.s / "test.pairs.tsv"), None,
                               str(output), OperonOptions(log_attention=log_attention))
            ap[output.name] = {k: v["ap_mean"] for k, v in summary["predictors"].items()}
        mine, paper = ap["operons"], ap["operons_plain"]
        return "operons/pr.png", (f"AP from attention {mine['attention']:.3f} (masked queries and log; plain "
                                  f"attention, as the paper, {paper['attention']:.3f}); distance+strand baseline "
                                  f"{mine['distance-strand']:.3f}; combined {mine['combined']:.3f}"), \
            mine["attention"] > mine["distance-strand"]

    def paralogs(self):
        import numpy as np

        from glmkit.commands.paralog_match import ParalogOptions, run_paralog_match

        truths = sorted((self.s / "partners").glob("*.tsv"))
        self.p["partners"].mkdir()
        exact, pairs, per_draw = 0, 0, 0
        for truth in truths:   # each held-out genome's queries against its own candidates, as the paper
            name = truth.stem
            result = run_paralog_match([str(truth.with_suffix(".A.faa"))], [str(truth.with_suffix(".B.faa"))],
                                       str(self.s / "embeddings.zarr"), str(self.p["glm"]),
                                       str(self.p["partners"] / f"{name}.tsv"), str(truth),
                                       str(self.p["partners"] / f"{name}.json"),
                                       ParalogOptions(cluster_id=0, device=self.o.device, threads=self.o.threads))
            exact += result["exact_correct"]
            pairs += result["pairs"]
            per_draw = per_draw + np.array(result["random_baseline"]["exact_per_draw"])
        low, high = np.percentile(per_draw, [2.5, 97.5])
        _plot_partners(per_draw, exact, pairs, self.p["partners.png"])
        return "partners.png", (f"{exact} of {pairs} partners exact in {len(truths)} genomes (random predictions: "
                                f"{per_draw.mean():.1f}, 95 % interval {low:.0f}-{high:.0f})"), exact > high

    def pretrain_glm2(self):
        last = self._pretrain(self.s / "train.zarr", None, self.p["glm2"], "glm2", **GLM2_SHAPE)["last"]
        ppl = {m: (last[f"val_{m}_perplexity"], last[f"val_{m}_unigram_perplexity"]) for m in ("aa", "nt")}
        return "glm2/curves.png", (f"validation perplexity at step {last['step']:.0f}: amino acids {ppl['aa'][0]:.2f} "
                                   f"(unigram baseline {ppl['aa'][1]:.2f}), nucleotides {ppl['nt'][0]:.2f} "
                                   f"(unigram {ppl['nt'][1]:.2f})"), all(m < u for m, u in ppl.values())

    # -- back to the real genomes --------------------------------------------------------------------------------

    def contextualize_real(self):
        from glmkit.commands.contextualize import ContextOptions, run_contextualize
        from glmkit.io.context import ContextStore

        run_contextualize([str(self.p["subcontigs.zarr"])], None, str(self.p["glm2"]), str(self.p["context.zarr"]),
                          ContextOptions(device=self.o.device, threads=self.o.threads, context=GLM2_SHAPE["context"]))
        store = ContextStore(self.p["context.zarr"])
        return "context.zarr", (f"{store.n_genes:,} genes of {len(store.contig_names())} sub-contigs, by the gLM2 "
                                f"trained above")

    def jacobian(self):
        from glmkit.io.fasta import read_fasta
        from glmkit.io.files import InputFile
        from glmkit.commands.jacobian import JacobianOptions, run_jacobian

        length = self.size.jacobian_residues   # full: every substitution of 120 positions, about a minute on 2 cores
        records = [r for r in read_fasta(InputFile(self.p["proteins.faa"]), "protein") if len(r.sequence) >= length]
        self.p["pair.faa"].write_text("".join(f">{r.name}\n{r.sequence[:length].decode()}\n" for r in records[:2]))
        fast = self.size.fast_jacobian
        run_jacobian(str(self.p["pair.faa"]), self.plm, str(self.p["contacts.npy"]),
                     JacobianOptions(fast=fast, device=self.o.device, threads=self.o.threads))
        return "contacts.png", f"{2 * length} residues of two proteins{' (--fast)' if fast else ''}"

    def dedup(self):
        from glmkit.commands.dedup import SemanticOptions, run_semantic

        result = run_semantic(str(self.p["context.zarr"]), str(self.p["dedup"]),
                              SemanticOptions(clusters=2, eps=(2e-3, 1e-1), threads=self.o.threads))
        pruned = ", ".join(f"{100 * p / result['items']:.0f} % at {e:g}" for e, p in result["pruned"].items())
        return "dedup/remaining.png", f"{result['items']} sub-contigs; pruned {pruned}"

    def proteins(self):
        from glmkit.commands.dedup import ProteinOptions, run_proteins

        result = run_proteins([str(self.p["proteins.faa"])], str(self.p["protein_clusters"]),
                              ProteinOptions(threads=self.o.threads))
        tool = json.loads((self.p["protein_clusters"] / "provenance.json").read_text())["mmseqs"]
        return "protein_clusters/", (f"{result['proteins']:,} proteins in {result['clusters']:,} clusters (90 %); "
                                     f"MMseqs2 {tool['version'][:7]} from {tool['source']}")


def _number(text: str) -> float:
    return float(text) if text else float("nan")


def _plot_operon_attention(context: Path, pairs: Path, png: Path) -> int:
    """The first held-out window's attention, with the planted operons outlined: the head most correlated with
    operon membership (operons eval's best head is not known yet here: the largest mean attention between
    same-operon neighbours) and the mean of all heads of the last layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.patches import Rectangle

    from glmkit.io.context import ContextStore

    store = ContextStore(context)
    first, n = store.windows()
    window, maps = next(store.attention([0]))
    ids = store.gene_ids()[int(first[window]):int(first[window]) + int(n[window])]
    same = {(a, b) for a, b, y in (line.split("\t") for line in pairs.read_text().splitlines()[1:]) if y == "1"}
    runs, start = [], 0   # consecutive genes joined by same-operon pairs
    for i in range(1, len(ids) + 1):
        if i == len(ids) or (ids[i - 1], ids[i]) not in same:
            if i - start > 1:
                runs.append((start, i))
            start = i
    maps = maps.astype(np.float32)
    inside = [(i, i + 1) for s, e in runs for i in range(s, e - 1)]
    score = np.array([[np.mean([m[i, j] + m[j, i] for i, j in inside]) if inside else 0 for m in layer]
                      for layer in maps])
    layer, head = np.unravel_index(int(score.argmax()), score.shape)
    panels = [(maps[layer, head], f"layer {layer + 1}, head {head + 1}"),
              (maps[-1].mean(0), f"layer {maps.shape[0]}, mean of {maps.shape[1]} heads")]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.8))
    for ax, (image, title) in zip(axes, panels):
        ax.imshow(image, cmap="viridis")
        for s, e in runs:
            ax.add_patch(Rectangle((s - 0.5, s - 0.5), e - s, e - s, fill=False, edgecolor="red", linewidth=1.2))
        ax.set(title=title, xlabel="gene attended to", ylabel="masked gene (query)")
    fig.suptitle("Masked-query attention on a held-out synthetic genome; red: planted operons", fontsize=10)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return store.n_genes


def _plot_partners(per_draw, exact: int, pairs: int, png: Path) -> None:
    """Exact matches of the random-prediction draws (histogram) and of the trained gLM (line)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.hist(per_draw, bins=np.arange(per_draw.min(), per_draw.max() + 2) - 0.5, color="0.6",
            label="random predictions (1,000 draws)")
    ax.axvline(exact, color="C3", linewidth=2, label=f"trained gLM: {exact}")
    ax.set(xlabel=f"partners matched exactly (of {pairs})", ylabel="draws", xlim=(0, pairs),
           title="Interacting paralogs, held-out synthetic genomes")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


PICTURES = [("gLM training: validation loss against the mean-label baseline (synthetic corpus)", "glm/curves.png"),
            ("gLM masked-query attention, planted operons outlined (held-out synthetic genome)", "attention.png"),
            ("Operons: precision-recall, attention against distance+strand (held-out synthetic genomes)",
             "operons/pr.png"),
            ("Operons: attention-operon correlation per layer and head", "operons/heads.png"),
            ("Interacting partners: the trained gLM against random predictions", "partners.png"),
            ("gLM2 training: perplexity against the unigram baseline (synthetic corpus)", "glm2/curves.png"),
            ("Contact map (categorical Jacobian, random-weight ESM2)", "contacts.png"),
            ("SemDeDup: fraction kept against the threshold", "dedup/remaining.png")]


def report(out: Path, stages: list[Stage], options: DemoOptions) -> None:
    width = max(len(s.name) for s in stages)
    lines = [f"{'stage':<{width}}  {'output':<22}  {'seconds':>7}  learned  key figure"]
    lines += [f"{s.name:<{width}}  {s.output:<22}  {s.seconds:>7.1f}  {s.learned:<7}  {s.figure}" for s in stages]
    for line in lines:
        log.info(line)
    with open(out / "summary.tsv", "w") as fh:
        fh.write("stage\toutput\tseconds\tkey_figure\tlearned\n")
        fh.writelines(f"{s.name}\t{s.output}\t{s.seconds:.1f}\t{s.figure}\t{s.learned}\n" for s in stages)
    rows = "".join(f"<tr><td>{html.escape(s.name)}</td><td><code>{html.escape(s.output)}</code></td>"
                   f"<td>{html.escape(s.figure)}</td><td>{s.learned}</td><td>{s.seconds:.1f}</td></tr>"
                   for s in stages)
    criteria = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in LEARNED.items())
    pictures = "".join(f"<figure><img src='{p}' alt='{html.escape(t)}'><figcaption>{html.escape(t)}</figcaption>"
                       f"</figure>" for t, p in PICTURES if (out / p).exists())
    plm = ("a random-weight ESM2 built by the demo: their embeddings, attention and contacts carry no biology, and "
           "show the pipeline working" if not options.plm else f"the protein language model {html.escape(options.plm)}")
    short = (" With --quick the trainings are too short for every figure to clear its baseline; the full demo's "
             "do." if options.quick else "")
    (out / "index.html").write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>glmkit demo</title><style>"
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto}td,th{padding:4px 10px;text-align:left}"
        "tr:nth-child(even){background:#f3f3f3}figure{display:inline-block;margin:1em}img{max-width:520px}"
        "</style></head><body><h1>glmkit demo</h1>"
        f"<p><b>Real genomes.</b> Three assemblies shipped with pyrodigal{' (--quick sizes)' if options.quick else ''} "
        f"go through call, filter, embed, contextualize, jacobian and dedup with {plm}.</p>"
        "<p><b>Synthetic corpus (planted grammar).</b> The gLM and gLM2 are trained on genomes whose grammar glmkit "
        "planted (gene families, operons in conserved order, interacting partner pairs, residues from a chain, "
        "promoter and Shine-Dalgarno motifs between genes) and are scored on held-out genomes, each figure beside "
        f"its baseline. <i>learned</i> says whether it beat the baseline:</p><ul>{criteria}</ul><p>{short}</p>"
        "<table><tr><th>stage</th><th>output</th><th>key figure</th><th>learned</th><th>seconds</th></tr>"
        f"{rows}</table>{pictures}</body></html>")
