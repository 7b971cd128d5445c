"""`glmkit demo`: every stage of the pipeline on inputs that need no download.

Real genomes that ship inside the pyrodigal wheel go through call, filter,
embed, pretrain, contextualize, jacobian, dedup and gLM2 pretraining. The
protein language model is a random-weight ESM2 built here with fair-esm's own
class (or a real one with ``--plm``). Operons and interacting partners need
known answers, which these genomes do not come with: those two stages run on
glmkit's synthetic corpus (glmkit.synthetic: planted operons and partner
pairs), with a gLM trained on it. The demo ends with a summary table (stage,
output, one key figure, seconds), PNGs, and an index.html that shows them.

With random weights the figures measure the plumbing, not biology: the
index.html says so where it matters.
"""

from __future__ import annotations

import html
import logging
import shutil
import time
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from glmkit.errors import GlmkitError

log = logging.getLogger("glmkit")

# A metagenomic SPAdes contig, a 20 kb scaffold and an 870 kb draft contig, each a real assembly.
DEMO_GENOMES = ("SRR492066.fna.gz", "KK037166.fna.gz", "MIIJ01000039.fna.gz")


@dataclass
class DemoOptions:
    quick: bool = False          # the CI's: every stage, minimal sizes, under 2 minutes on 2 cores
    plm: str | None = None       # a real ESM2 (fair-esm name, .pt, Hugging Face folder); None: random, built here
    device: str = "auto"
    threads: int = 1


@dataclass
class Stage:
    name: str
    output: str
    figure: str
    seconds: float


def write_random_esm2(path: Path, layers: int, dim: int, heads: int, seed: int = 0) -> Path:
    """A random-weight ESM2 made by fair-esm's own ESM2 class and saved in the layout of fair-esm's .pt files."""
    import argparse

    import esm
    import torch

    torch.manual_seed(seed)
    alphabet = esm.data.Alphabet.from_architecture("ESM-1b")
    model = esm.model.esm2.ESM2(num_layers=layers, embed_dim=dim, attention_heads=heads, alphabet=alphabet,
                                token_dropout=True)
    args = argparse.Namespace(encoder_layers=layers, encoder_embed_dim=dim, encoder_attention_heads=heads,
                              token_dropout=True)
    torch.save({"cfg": {"model": args},
                "model": {f"encoder.sentence_encoder.{k}": v for k, v in model.state_dict().items()}}, path)
    return path


def run_demo(outdir: str, options: DemoOptions = DemoOptions(), force: bool = False) -> list[Stage]:
    out = Path(outdir)
    if out.exists() and any(out.iterdir()) and not force:
        raise GlmkitError(f"{outdir}: folder exists and is not empty; use --force to overwrite its demo outputs")
    if out.exists() and force:
        shutil.rmtree(out)
    out.mkdir(parents=True)
    stages: list[Stage] = []

    def stage(name: str, run) -> None:
        log.info(f"demo: {name}")
        started = time.perf_counter()
        output, figure = run()
        stages.append(Stage(name, output, figure, time.perf_counter() - started))

    pipeline = _Pipeline(out, options)
    for name, run in pipeline.stages():
        stage(name, run)
    _report(out, stages, options)
    return stages


class _Pipeline:
    """The stages, in order; each returns (its main output, one key figure)."""

    def __init__(self, out: Path, options: DemoOptions):
        self.out, self.o = out, options
        self.q = options.quick
        self.p = {name: out / name for name in (
            "elements.zarr", "genes.gff", "proteins.faa", "filtered.zarr", "filter_report.tsv", "subcontigs.zarr",
            "subcontigs_report.tsv", "embeddings.zarr", "genes.tsv", "glm", "context.zarr", "attention.png",
            "synthetic", "synthetic_glm", "synthetic_context.zarr", "operons", "partners.tsv", "partners.json",
            "pair.faa", "contacts.npy", "dedup", "protein_clusters", "glm2")}

    def stages(self):
        return [("call", self.call), ("filter", self.filter), ("embed", self.embed), ("pretrain gLM", self.pretrain),
                ("contextualize", self.contextualize), ("operons (synthetic corpus)", self.operons),
                ("paralog-match (synthetic corpus)", self.paralogs), ("jacobian", self.jacobian),
                ("dedup semantic", self.dedup), ("dedup proteins", self.proteins), ("pretrain gLM2", self.glm2)]

    def call(self):
        from glmkit.call import CallOptions, run_call

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
        from glmkit.filter import FilterOptions, run_filter

        run_filter(str(self.p["elements.zarr"]), str(self.p["filtered.zarr"]), report=str(self.p["filter_report.tsv"]))
        stats = run_filter(str(self.p["elements.zarr"]), str(self.p["subcontigs.zarr"]),
                           report=str(self.p["subcontigs_report.tsv"]), options=FilterOptions(glm_subcontigs=True))
        return "subcontigs.zarr", f"{stats['contigs_out']} gLM sub-contigs of 15-30 genes"

    def embed(self):
        from glmkit.embed import EmbedOptions, run_embed

        if self.o.plm:
            self.plm = self.o.plm
        else:
            (self.out / "models").mkdir(exist_ok=True)
            layers, dim, heads = (2, 64, 4) if self.q else (6, 320, 20)   # full: esm2_t6_8M's shape
            self.plm = str(write_random_esm2(self.out / "models" / "esm2_random.pt", layers, dim, heads))
        stats = run_embed([str(self.p["subcontigs.zarr"])], str(self.p["embeddings.zarr"]),
                          map_path=str(self.p["genes.tsv"]),
                          options=EmbedOptions(model=self.plm, device=self.o.device, threads=self.o.threads))
        return "embeddings.zarr", f"{stats['distinct']:,} distinct proteins embedded"

    def _pretrain(self, elements, embeddings, output, **kw):
        from glmkit.pretrain import PretrainOptions, run_pretrain

        run_pretrain([str(elements)], str(embeddings) if embeddings else None, str(output),
                     PretrainOptions(device=self.o.device, threads=self.o.threads, **kw))
        rows = (Path(output) / "log.tsv").read_text().splitlines()
        header, last = rows[0].split("\t"), rows[-1].split("\t")
        return dict(zip(header, last))

    def pretrain(self):
        steps = dict(max_steps=30, val_every=15, checkpoint_every=30, log_every=5) if self.q else \
            dict(max_steps=3000, max_minutes=4, val_every=100, checkpoint_every=500, log_every=20)
        last = self._pretrain(self.p["subcontigs.zarr"], self.p["embeddings.zarr"], self.p["glm"], preset="tiny",
                              batch_size=4, **steps)
        return "glm/curves.png", f"step {last['step']}, validation loss {float(last.get('val_loss') or 'nan'):.3f}"

    def contextualize(self):
        from glmkit.contextualize import ContextOptions, run_contextualize

        run_contextualize([str(self.p["subcontigs.zarr"])], str(self.p["embeddings.zarr"]), str(self.p["glm"]),
                          str(self.p["context.zarr"]),
                          ContextOptions(attention=True, device=self.o.device, threads=self.o.threads))
        n = _plot_attention(self.p["context.zarr"], self.p["attention.png"])
        return "context.zarr", f"{n:,} genes in context; attention.png"

    def operons(self):
        from glmkit.contextualize import ContextOptions, run_contextualize
        from glmkit.operons import run_eval
        from glmkit.synthetic import SyntheticSpec, write_corpus

        spec = SyntheticSpec(train_genomes=10 if self.q else 40, test_genomes=4, genes_per_genome=90 if self.q else 150,
                             families=120, operon_templates=20, dim=64)
        write_corpus(self.p["synthetic"], spec)
        s = self.p["synthetic"]
        steps = dict(max_steps=40, val_every=20, checkpoint_every=40, log_every=10) if self.q else \
            dict(max_steps=1500, max_minutes=3, val_every=100, checkpoint_every=500, log_every=20)
        self._pretrain(s / "train.zarr", s / "embeddings.zarr", self.p["synthetic_glm"], preset="tiny", batch_size=4,
                       **steps)
        run_contextualize([str(s / "test.zarr")], str(s / "embeddings.zarr"), str(self.p["synthetic_glm"]),
                          str(self.p["synthetic_context.zarr"]),
                          ContextOptions(attention=True, device=self.o.device, threads=self.o.threads))
        summary = run_eval(str(self.p["synthetic_context.zarr"]), [str(s / "test.zarr")], str(s / "test.pairs.tsv"),
                           None, str(self.p["operons"]))
        ap = {k: v["ap_mean"] for k, v in summary["predictors"].items()}
        return "operons/pr.png", (f"AP attention {ap['attention']:.2f}, distance+strand {ap['distance-strand']:.2f}, "
                                  f"combined {ap['combined']:.2f}")

    def paralogs(self):
        from glmkit.paralog_match import ParalogOptions, run_paralog_match

        partners = self.p["synthetic"] / "partners"
        first = sorted(partners.glob("*.tsv"))[0].stem
        result = run_paralog_match([str(partners / f"{first}.A.faa")], [str(partners / f"{first}.B.faa")],
                                   str(self.p["synthetic"] / "embeddings.zarr"), str(self.p["synthetic_glm"]),
                                   str(self.p["partners.tsv"]), str(partners / f"{first}.tsv"),
                                   str(self.p["partners.json"]),
                                   ParalogOptions(cluster_id=0, device=self.o.device, threads=self.o.threads))
        chance = result["random_baseline"]["exact_mean"]
        return "partners.tsv", (f"{result['exact_correct']} of {result['pairs']} partners exact "
                                f"(random: {chance:.1f})")

    def jacobian(self):
        from glmkit.io.fasta import read_fasta
        from glmkit.io.files import InputFile
        from glmkit.jacobian import JacobianOptions, run_jacobian

        length = 40 if self.q else 60   # full: every substitution of 120 positions, about a minute on 2 cores
        records = [r for r in read_fasta(InputFile(self.p["proteins.faa"]), "protein") if len(r.sequence) >= length]
        self.p["pair.faa"].write_text("".join(f">{r.name}\n{r.sequence[:length].decode()}\n" for r in records[:2]))
        run_jacobian(str(self.p["pair.faa"]), self.plm, str(self.p["contacts.npy"]),
                     JacobianOptions(fast=self.q, device=self.o.device, threads=self.o.threads))
        return "contacts.png", f"{2 * length} residues of two proteins{' (--fast)' if self.q else ''}"

    def dedup(self):
        from glmkit.dedup import SemanticOptions, run_semantic

        result = run_semantic(str(self.p["context.zarr"]), str(self.p["dedup"]),
                              SemanticOptions(clusters=2, eps=(2e-3, 1e-1), threads=self.o.threads))
        pruned = ", ".join(f"{100 * p / result['items']:.0f} % at {e:g}" for e, p in result["pruned"].items())
        return "dedup/remaining.png", f"{result['items']} sub-contigs; pruned {pruned}"

    def proteins(self):
        if shutil.which("mmseqs") is None:
            return "-", "skipped: mmseqs (MMseqs2) is not installed"
        from glmkit.dedup import ProteinOptions, run_proteins

        result = run_proteins([str(self.p["proteins.faa"])], str(self.p["protein_clusters"]),
                              ProteinOptions(threads=self.o.threads))
        return "protein_clusters/", f"{result['proteins']:,} proteins in {result['clusters']:,} clusters (90 %)"

    def glm2(self):
        steps = dict(max_steps=10, val_every=5, checkpoint_every=10, log_every=5) if self.q else \
            dict(max_steps=2000, max_minutes=2, val_every=50, checkpoint_every=500, log_every=10)
        last = self._pretrain(self.p["filtered.zarr"], None, self.p["glm2"], arch="glm2", preset="tiny", context=256,
                              batch_size=4, **steps)
        aa, unigram = (float(last.get(k) or "nan") for k in ("val_aa_perplexity", "val_aa_unigram_perplexity"))
        return "glm2/curves.png", f"step {last['step']}, amino-acid perplexity {aa:.2f} (unigram baseline {unigram:.2f})"


def _plot_attention(context: Path, png: Path) -> int:
    """The first window's attention, averaged over heads, one panel per layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from glmkit.io.context import ContextStore

    store = ContextStore(context)
    _, maps = next(store.attention([0]))
    layers = maps.shape[0]
    fig, axes = plt.subplots(1, layers, figsize=(3.2 * layers, 3.2), squeeze=False)
    for layer, ax in enumerate(axes[0]):
        ax.imshow(maps[layer].astype("float32").mean(0), cmap="viridis")
        ax.set_title(f"layer {layer + 1}, mean of heads")
        ax.set_xlabel("gene attended to")
    axes[0][0].set_ylabel("gene")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return store.n_genes


PICTURES = [("gLM training curves", "glm/curves.png"), ("gLM attention (first window)", "attention.png"),
            ("Operons: precision-recall (synthetic corpus)", "operons/pr.png"),
            ("Operons: attention-operon correlation per layer and head", "operons/heads.png"),
            ("Contact map (categorical Jacobian)", "contacts.png"),
            ("SemDeDup: fraction kept against the threshold", "dedup/remaining.png"),
            ("gLM2 training curves", "glm2/curves.png")]


def _report(out: Path, stages: list[Stage], options: DemoOptions) -> None:
    width = max(len(s.name) for s in stages)
    lines = [f"{'stage':<{width}}  {'output':<22}  {'seconds':>7}  key figure"]
    lines += [f"{s.name:<{width}}  {s.output:<22}  {s.seconds:>7.1f}  {s.figure}" for s in stages]
    for line in lines:
        log.info(line)
    with open(out / "summary.tsv", "w") as fh:
        fh.write("stage\toutput\tseconds\tkey_figure\n")
        fh.writelines(f"{s.name}\t{s.output}\t{s.seconds:.1f}\t{s.figure}\n" for s in stages)
    rows = "".join(f"<tr><td>{html.escape(s.name)}</td><td><code>{html.escape(s.output)}</code></td>"
                   f"<td>{html.escape(s.figure)}</td><td>{s.seconds:.1f}</td></tr>" for s in stages)
    pictures = "".join(f"<figure><img src='{p}' alt='{html.escape(t)}'><figcaption>{html.escape(t)}</figcaption>"
                       f"</figure>" for t, p in PICTURES if (out / p).exists())
    weights = ("a random-weight ESM2 built by the demo: embeddings, attention and contacts carry no biology here; "
               "the operon and partner figures come from glmkit's synthetic corpus, whose answers are planted"
               if not options.plm else f"protein language model: {html.escape(options.plm)}")
    (out / "index.html").write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>glmkit demo</title><style>"
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto}td,th{padding:4px 10px;text-align:left}"
        "tr:nth-child(even){background:#f3f3f3}figure{display:inline-block;margin:1em}img{max-width:520px}"
        "</style></head><body><h1>glmkit demo</h1>"
        f"<p>Every stage on three genomes shipped with pyrodigal{' (--quick sizes)' if options.quick else ''}; "
        f"{weights}.</p><table><tr><th>stage</th><th>output</th><th>key figure</th><th>seconds</th></tr>{rows}"
        f"</table>{pictures}</body></html>")
