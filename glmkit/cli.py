"""The command line: parse and validate, then call one function in the module of the same name.

Nothing heavy is imported at module level, so `glmkit --version` and `--help`
answer instantly; each command imports its module when it runs.
"""

from __future__ import annotations

import functools
import gc
import inspect
import os
import sys
from pathlib import Path

import click

from glmkit import __version__
from glmkit.errors import GlmkitError, GlmkitUsageError
from glmkit.models.registry import FAMILIES
from glmkit.options import (ATTENTION_QUERIES, FAST_MODES, KEEP_ORDERS, KINDS, LEVELS, LONG_MODES, MODES, PRECISIONS,
                            PROTEIN_PRESETS, RECIPES, STORED_DTYPES, WINDOWS, CallOptions, ContextOptions, DemoOptions,
                            EmbedOptions, FilterOptions, GenesOptions, JacobianOptions, OperonOptions, ParalogOptions,
                            PretrainOptions, ProteinOptions, SemanticOptions)
from glmkit.provenance import set_command_line

MODEL_COMMANDS = ("embed", "pretrain", "contextualize", "jacobian", "demo")  # models run: the malloc setting pays
PIPELINE = ("call", "genes", "filter", "embed", "pretrain", "import-glm", "export-glm", "contextualize", "operons", "paralog-match", "jacobian", "dedup",
            "validate", "demo")


class PipelineGroup(click.Group):
    """Lists subcommands in pipeline order and turns GlmkitError into a one-line message."""

    def list_commands(self, ctx):
        return [name for name in PIPELINE if name in self.commands]

    def parse_args(self, ctx, args):
        set_command_line(args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.UsageError as e:  # one line, like every other error (click prints three)
            name = f"glmkit {ctx.invoked_subcommand}" if ctx.invoked_subcommand else "glmkit"
            click.echo(f"{name}: error: {e.format_message()} (see {name} --help)", err=True)
            ctx.exit(2)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt as e:  # SIGINT, or SIGTERM through glmkit.stop: one line, how to resume
            from glmkit.stop import Stopped, with_hint

            stopped = e if isinstance(e, Stopped) else with_hint(e, "")
            hint = stopped.hint or "nothing was published; rerun the command"
            if _leave_it_to_rank_0():
                ctx.exit(128 + stopped.signum)
            click.echo(f"{_who(ctx)}: stopped by {stopped.name}; {hint}", err=True)
            ctx.exit(128 + stopped.signum)
        except Exception as e:
            if ctx.meta.get("glmkit.debug"):
                raise
            if isinstance(e, GlmkitError):
                message, status = str(e), 2 if isinstance(e, GlmkitUsageError) else 1
                if _leave_it_to_rank_0():
                    ctx.exit(status)
            elif isinstance(e, OSError) and e.strerror:
                message, status = f"{e.filename or ''}: {e.strerror}".lstrip(": "), 1
            elif _out_of_memory(e):   # the sizes asked for, not a bug: say which options set them
                sizes = SIZE_OPTIONS.get(ctx.invoked_subcommand, "--batch-size")
                message, status = (f"out of memory: the sizes asked for need more memory than this machine can give "
                                   f"({type(e).__name__}); lower {sizes} and run it again"), 1
            else:
                message, status = f"internal error: {type(e).__name__}: {e} (rerun with --debug for the traceback)", 1
            click.echo(f"{_who(ctx)}: error: {message}", err=True)
            ctx.exit(status)


def _who(ctx) -> str:
    rank = (os.environ.get("RANK", "").strip() or "0")
    return f"glmkit {ctx.invoked_subcommand or ''}".rstrip() + (f" [rank {rank}]" if rank != "0" else "")


# per command, the options whose values set how much memory a run takes
SIZE_OPTIONS = {"pretrain": "--batch-size, --context or the model's size", "embed": "--max-tokens",
                "contextualize": "--batch-size, --context or --window-genes", "jacobian": "--batch-size",
                "dedup": "--block or --sample", "paralog-match": "--batch-size"}


def _out_of_memory(e: BaseException) -> bool:
    """An allocation that failed: Python's MemoryError, torch's "can't allocate memory", numpy's "array is too
    big"."""
    text = str(e)
    return isinstance(e, MemoryError) or (isinstance(e, RuntimeError) and ("can't allocate memory" in text or
                                                                          "out of memory" in text.lower())) or \
        (isinstance(e, ValueError) and "array is too big" in text)


def _leave_it_to_rank_0(wait: float = 5.0) -> bool:
    """Under torchrun, an error every process meets is reported once, by rank 0: another rank waits a moment,
    and torchrun ends it when rank 0 exits. If rank 0 is still running after the wait, the error is this rank's
    own, and it reports it (marked with its rank)."""
    import time

    if (os.environ.get("RANK", "").strip() or "0") == "0":
        return False
    try:
        time.sleep(wait)
    except KeyboardInterrupt:  # torchrun ending this process because rank 0 has exited
        return True
    return False


def command(name: str, example: str, group=None, **kwargs):
    """A subcommand (of ``group``, default glmkit itself) with --quiet/--debug, set up logging before the body,
    and an example in --help."""

    def decorate(func):
        @click.option("--debug", is_flag=True, help="Show tracebacks and debug messages.")
        @click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors.")
        @functools.wraps(func)
        def wrapper(*args, quiet: bool, debug: bool, **params):
            from glmkit import log

            click.get_current_context().meta["glmkit.debug"] = debug
            # under torchrun, rank 0 speaks for the job: the others print nothing but unexpected failures
            log.setup(quiet=quiet or (os.environ.get("RANK", "").strip() or "0") != "0", debug=debug)
            if "threads" in params:
                from glmkit.resources import resolve_threads

                params["threads"] = resolve_threads(params["threads"])
            return func(*args, **params)

        doc = inspect.cleandoc(func.__doc__ or "")
        wrapper.__doc__ = doc + f"\n\n\b\nExample:\n  {example}"
        kwargs.setdefault("short_help", doc.splitlines()[0].rstrip("."))
        return (group or cli).command(name, **kwargs)(wrapper)

    return decorate


def threads_option(func):
    return click.option("--threads", "-t", type=click.IntRange(min=0), default=0, show_default=True,
                        help="Worker threads; 0 uses every CPU this process may run on.")(func)


def force_option(func):
    return click.option("--force", is_flag=True, help="Replace outputs that exist.")(func)


@click.group(cls=PipelineGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", "-V", prog_name="glmkit")
def cli():
    """glmkit: from prokaryotic and metagenomic assemblies to genomic language models.

    Subcommands are listed in pipeline order; each reads the stores and tables
    the previous one wrote. `glmkit COMMAND --help` shows an example.
    """


@command("call", "glmkit call assembly.fna.gz -o elements.zarr --gff genes.gff --proteins genes.faa -t 8")
@click.argument("inputs", nargs=-1, required=True, metavar="FASTA...")
@click.option("--output", "-o", required=True, help="Element store to write (Zarr folder).")
@click.option("--gff", help="Also write the CDS as GFF3 ('-' for stdout).")
@click.option("--proteins", "-a", help="Also write the proteins as FASTA, like prodigal -a.")
@click.option("--genes", "-d", help="Also write the gene nucleotide sequences as FASTA, like prodigal -d.")
@click.option("--mode", "-p", type=click.Choice(MODES), default=CallOptions.mode, show_default=True,
              help="meta: Prodigal's pre-trained metagenomic models; single: train on each input file (one genome per file).")
@click.option("--translation-table", "-g", type=click.IntRange(1, 33),
              help="single: genetic code to train with [11]; meta: use only the models of this code (11 or 4).")
@click.option("--closed", "-c", is_flag=True, help="Closed ends: no genes running off contig edges.")
@click.option("--mask", is_flag=True, help="Do not build genes across runs of N (prodigal -m; in glmkit -m is --model).")
@click.option("--min-gene", type=click.IntRange(min=1), default=CallOptions.min_gene, show_default=True, help="Minimum gene length (bp).")
@click.option("--min-edge-gene", type=click.IntRange(min=1), default=CallOptions.min_edge_gene, show_default=True,
              help="Minimum length of a gene running off an edge (bp).")
@click.option("--max-overlap", type=click.IntRange(min=0), default=CallOptions.max_overlap, show_default=True,
              help="Maximum overlap of two genes on the same strand (bp).")
@threads_option
@force_option
def call_command(inputs, output, gff, proteins, genes, mode, translation_table, closed, mask, min_gene,
                 min_edge_gene, max_overlap, threads, force):
    """Call genes in contigs with Prodigal's algorithm into an element store.

    Input: nucleotide FASTA, gzip or not, '-' for stdin. Writes CDS and intergenic (IGS) elements per contig with strand, coordinates,
    partial flags, translation table, Prodigal's scores and sequences.
    """
    from glmkit.commands.call import CallOptions, run_call

    options = CallOptions(mode=mode, translation_table=translation_table, closed=closed, mask=mask,
                          min_gene=min_gene, min_edge_gene=min_edge_gene, max_overlap=max_overlap,
                          threads=threads)
    run_call(inputs, output, gff=gff, proteins=proteins, genes=genes, options=options, force=force)


@command("genes", "glmkit genes GCF_000005845.2_genomic.gff.gz --fasta GCF_000005845.2_genomic.fna.gz -o elements.zarr")
@click.argument("annotations", nargs=-1, required=True, metavar="ANNOTATION...")
@click.option("--output", "-o", required=True, help="Element store to write (Zarr folder).")
@click.option("--fasta", "fastas", multiple=True, help="The sequences of GFF3 annotations without a ##FASTA "
              "section (repeat for several files).")
@click.option("--proteins", "-a", help="Also write the proteins as FASTA, like prodigal -a.")
@click.option("--translation-table", "-g", type=click.IntRange(1, 33), default=GenesOptions.translation_table,
              show_default=True, help="Genetic code of CDS whose annotation names none.")
@force_option
def genes_command(annotations, output, fastas, proteins, translation_table, force):
    """Element store from an existing annotation instead of calling genes (RefSeq, Prokka, Bakta, PGAP).

    Input: GFF3 with --fasta (or its own ##FASTA section), or GenBank / EMBL flat files; gzip or not. Writes
    the store `glmkit call` writes, its CDS those of the annotation (ids from locus_tag, with gene name and
    product), pseudogenes and RNA genes inside the IGS.
    """
    from glmkit.commands.genes import run_genes

    run_genes(annotations, output, fastas, proteins, GenesOptions(translation_table=translation_table), force)


@command("filter", "glmkit filter elements.zarr -o clean.zarr --report removed.tsv --glm-subcontigs")
@click.argument("input", metavar="ELEMENTS")
@click.option("--output", "-o", required=True, help="Filtered element store to write.")
@click.option("--report", "-r", help="TSV of every removed or split element and the rule that did it ('-' for stdout).")
@click.option("--min-contig-length", type=click.IntRange(min=0), default=FilterOptions.min_contig_length, show_default=True,
              help="Drop contigs shorter than this (bp).")
@click.option("--min-elements", type=click.IntRange(min=0), default=FilterOptions.min_elements, show_default=True,
              help="Drop (sub-)contigs with fewer elements.")
@click.option("--min-cds", type=click.IntRange(min=0), default=FilterOptions.min_cds, show_default=True,
              help="Drop (sub-)contigs with fewer CDS.")
@click.option("--max-invalid-fraction", type=click.FloatRange(0, 1), default=FilterOptions.max_invalid_fraction, show_default=True,
              help="Split at elements with more invalid characters (X in proteins, non-ACGT in IGS).")
@click.option("--max-cds-aa", type=click.IntRange(min=1), default=FilterOptions.max_cds_aa, show_default=True,
              help="Split at CDS longer than this (amino acids).")
@click.option("--max-igs-bp", type=click.IntRange(min=1), default=FilterOptions.max_igs_bp, show_default=True,
              help="Split at IGS longer than this (bp).")
@click.option("--max-elements", type=click.IntRange(min=1), default=FilterOptions.max_elements, show_default=True,
              help="Chunk contigs with more elements into pieces of at most this many.")
@click.option("--keep-edges", is_flag=True, help="Do not drop the edge elements of each contig.")
@click.option("--glm-subcontigs", is_flag=True,
              help="Then cut each contig into gLM sub-contigs of consecutive genes (see the two options below).")
@click.option("--subcontig-genes", type=click.IntRange(min=1), default=FilterOptions.subcontig_genes, show_default=True,
              help="Genes per gLM sub-contig (non-overlapping chunks).")
@click.option("--min-subcontig-genes", type=click.IntRange(min=1), default=FilterOptions.min_subcontig_genes, show_default=True,
              help="Drop gLM sub-contigs with fewer genes.")
@click.option("--keep", help="A `glmkit dedup semantic` table (dedup.tsv): drop the contigs it marks 0.")
@click.option("--keep-column", help="With --keep: the column to apply, e.g. keep_0.002 [default: the only one].")
@force_option
def filter_command(input, output, report, **params):
    """Apply the OMG corpus quality rules; optionally cut gLM sub-contigs.

    Every threshold defaults to the paper's value. Writes a filtered element store
    that keeps the source element ids, a TSV report, and one line per rule on stderr.
    """
    from glmkit.commands.filter import FilterOptions, run_filter

    force = params.pop("force")
    options = FilterOptions(**params)
    if options.min_subcontig_genes > options.subcontig_genes:
        raise click.BadParameter("must not exceed --subcontig-genes", param_hint="--min-subcontig-genes")
    if options.keep_column and not options.keep:
        raise click.BadParameter("goes with --keep", param_hint="--keep-column")
    run_filter(input, output, report=report, options=options, force=force)


def _parse_shard(ctx, param, value):
    if value is None:
        return None
    try:
        k, n = (int(x) for x in value.split("/"))
    except ValueError:
        raise click.BadParameter("expected K/N, e.g. 3/10") from None
    if not 1 <= k <= n:
        raise click.BadParameter("K must be between 1 and N")
    return k, n


def device_options(func):
    func = click.option("--precision", type=click.Choice(PRECISIONS), default=PRECISIONS[0],
                        show_default=True, help="auto: bf16 (or fp16) on GPU, fp32 on CPU; bf16 runs on CPU too, "
                                                "1.4-2.3x fp32's speed where the CPU has bf16 instructions "
                                                "(AVX512-BF16, AMX), far slower where not (fp16 needs a GPU).")(func)
    return click.option("--device", default="auto", show_default=True,
                        help="auto, cpu, cuda or cuda:N.")(func)


@command("embed", "glmkit embed elements.zarr -o embeddings.zarr --map genes.tsv --model esm2_t33_650M_UR50D")
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option("--output", "-o", required=True, help="Embedding store to write.")
@click.option("--map", "map_path", help="TSV: element/protein id -> protein hash -> hash of the embedded sequence.")
@click.option("--model", "-m", help="fair-esm name (e.g. esm2_t33_650M_UR50D), fair-esm .pt file, or Hugging Face folder.")
@click.option("--layer", type=click.IntRange(min=0), help="Layer to pool [default: the last].")
@click.option("--max-residues", type=click.IntRange(min=1), default=EmbedOptions.max_residues, show_default=True,
              help="Longest stretch of a protein the model sees (fair-esm's extract.py uses 1022).")
@click.option("--long", "long_mode", type=click.Choice(LONG_MODES), default=EmbedOptions.long, show_default=True,
              help="Longer proteins: keep the first --max-residues, or average windows overlapping by half.")
@click.option("--max-tokens", type=click.IntRange(min=16), default=EmbedOptions.max_tokens, show_default=True,
              help="Token budget per batch (padding included).")
@device_options
@click.option("--dtype", type=click.Choice(STORED_DTYPES), default=EmbedOptions.dtype, show_default=True,
              help="Stored precision (float16 halves the store).")
@click.option("--chunk-rows", type=click.IntRange(min=1), default=EmbedOptions.chunk_rows, show_default=True,
              help="Proteins per stored chunk: the unit of resume.")
@click.option("--shard", callback=_parse_shard, metavar="K/N", help="Embed the K-th of N slices (array jobs); "
              "merge with `glmkit embed SHARD.zarr... -o all.zarr`.")
@click.option("--cluster-id", type=click.FloatRange(0, 1), help="Cluster with MMseqs2 linclust at this identity and "
              "embed representatives only (gLM corpus: 0.9).")
@click.option("--coverage", type=click.FloatRange(0, 1), default=EmbedOptions.coverage, show_default=True, help="MMseqs2 coverage (-c).")
@click.option("--no-nucleotide-check", "nucleotide_check", flag_value=False, default=EmbedOptions.nucleotide_check,
              help="Accept FASTA records of only A, C, G, T, U, N (refused by default: a nucleotide file by mistake).")
@click.option("--import-embeddings", help="Take the embeddings from here instead of computing them: a folder of "
              "fair-esm extract.py .pt files, a .pkl of (id, array) pairs (the gLM's plm_embed.py), or a .npy matrix "
              "with --import-ids. INPUTs give the sequences, matched by id.")
@click.option("--import-ids", help="Ids of the .npy matrix's rows, one per line.")
@click.option("--import-model", help="The model that computed the imported embeddings (recorded; later commands "
                                     "check it), e.g. esm2_t33_650M_UR50D; give its --layer too.")
@threads_option
@force_option
def embed_command(inputs, output, map_path, force, long_mode, threads, **params):
    """ESM2 protein embeddings: mean over residues of one layer, one per distinct sequence.

    INPUT: element stores (their CDS), protein FASTA files ('-' for stdin; a final
    '*' is dropped), or embedding stores, whose rows are reused instead of
    recomputed (this is how shards are merged and stores extended). A killed run
    restarted with the same command resumes from its last finished chunk.
    """
    from glmkit.commands.embed import EmbedOptions, run_embed

    options = EmbedOptions(long=long_mode, threads=threads, **params)
    run_embed(inputs, output, map_path=map_path, options=options, force=force)


@command("pretrain", "glmkit pretrain corpus.zarr -e embeddings.zarr -o glm/ --preset small --max-steps 20000")
@click.argument("elements", nargs=-1, required=True, metavar="ELEMENTS...")
@click.option("--arch", type=click.Choice([spec.key for spec in FAMILIES]), default=PretrainOptions.arch, show_default=True,
              help="glm: the gLM over ESM2 gene embeddings; glm2: gLM2 over amino-acid and nucleotide tokens.")
@click.option("--embeddings", "-e", help="Embedding store covering the genes of ELEMENTS (the gLM only).")
@click.option("--output", "-o", required=True, help="Folder: checkpoint/, log.tsv, curves.png.")
@click.option("--preset", type=click.Choice(list(dict.fromkeys(p for spec in FAMILIES for p in spec.presets))), default=PretrainOptions.preset,
              show_default=True, help="gLM: paper (19 layers, hidden 1280, 10 heads), small, tiny; gLM2: 650M (33 "
                                      "layers, dim 1280, 20 heads), 150M (30, 640, 10), small, tiny.")
@click.option("--context", type=click.IntRange(min=3), default=PretrainOptions.context, show_default=True,
              help="gLM2: tokens per chunk (contigs are cut at element boundaries) and per packed row.")
@click.option("--num-layers", type=click.IntRange(min=1), help="Override the preset.")
@click.option("--hidden-size", type=click.IntRange(min=1), help="Override the preset.")
@click.option("--num-heads", type=click.IntRange(min=1), help="Override the preset.")
@click.option("--dropout", type=click.FloatRange(0, 1, max_open=True), help="Override the preset (paper, small: 0.1).")
@click.option("--max-steps", type=click.IntRange(min=1), default=PretrainOptions.max_steps, show_default=True,
              help="Optimiser steps to train for (the schedule decays to 0 here).")
@click.option("--max-minutes", type=click.FloatRange(min=0), help="Stop (and checkpoint) after this long; at least one step is taken.")
@click.option("--batch-size", type=click.IntRange(min=1), default=PretrainOptions.batch_size, show_default=True,
              help="Rows of packed sub-contigs per step, over all processes.")
@click.option("--accumulate", type=click.IntRange(min=1), default=PretrainOptions.accumulate, show_default=True,
              help="Split each step's rows into this many forward/backward passes (gradients synchronised once).")
@click.option("--recipe", type=click.Choice(RECIPES), default=PretrainOptions.recipe, show_default=True,
              help="reference: the gLM train.py's recipe (Bernoulli masks, loss over all positions, constant lr, "
                   "no decay or clipping); see docs/commands/pretrain.md.")
@click.option("--corpus", help="Corpus store to build or reuse [default: OUTPUT/corpus.zarr]; share one between "
                               "runs on the same inputs.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True),
              help="Peak learning rate of AdamW [default: gLM 1e-4 (the paper's), gLM2 1e-3].")
@click.option("--weight-decay", type=click.FloatRange(min=0),
              help="AdamW weight decay on matrices [default: gLM 0.01, gLM2 0.1 (the OMG paper's)].")
@click.option("--warmup-steps", type=click.IntRange(min=0),
              help="Linear warm-up steps [default: the paper's 5,000, at most a tenth of --max-steps].")
@click.option("--mask-fraction", type=click.FloatRange(0, 1, min_open=True),
              help="gLM: share of each sub-contig's genes masked per step (at least one) [default: 0.15]; gLM2: "
                   "chance of each residue token to be masked [default: 0.30].")
@click.option("--val-fraction", type=click.FloatRange(0, 1, max_open=True), default=PretrainOptions.val_fraction, show_default=True,
              help="Share of contigs held out for validation.")
@click.option("--val-every", type=click.IntRange(min=1), default=PretrainOptions.val_every, show_default=True,
              help="Steps between validations (loss and pseudo-accuracy on the held-out contigs).")
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=PretrainOptions.checkpoint_every, show_default=True,
              help="Steps between checkpoints (the point --resume continues from).")
@click.option("--log-every", type=click.IntRange(min=1), default=PretrainOptions.log_every, show_default=True,
              help="Steps between rows of log.tsv.")
@click.option("--seed", type=int, default=PretrainOptions.seed, show_default=True,
              help="Seeds initial weights, data order, masks and dropout: same seed, same run.")
@click.option("--resume", is_flag=True, help="Continue from OUTPUT/checkpoint exactly where it stopped.")
@click.option("--init", "init", help="Start from this model's weights (fresh optimiser and schedule): a glmkit model, "
                                     "an import-glm folder, or a published gLM2 folder (gLM2_650M); it sets --arch "
                                     "and the shape.")
@click.option("--compile", "compile_model", is_flag=True,
              help="torch.compile the model for training: fused kernels and far fewer launches, for GPUs, where an "
                   "eager step of a small batch is bound by the host (the first steps pay the compilation).")
@click.option("--static-shapes", is_flag=True,
              help="Every training step the same tensor shapes (padding positions computed, the loss weighted to "
                   "the masked ones): with --compile, one graph without dynamic shapes and, on one GPU, CUDA graphs "
                   "replaying the step.")
@device_options
@threads_option
@force_option
def pretrain_command(elements, embeddings, output, resume, force, threads, init, **params):
    """Train the gLM (masked gene modelling) or gLM2 (masked token modelling).

    gLM: sub-contigs of 15-30 genes are cut from each contig of ELEMENTS, with
    their ESM2 embeddings (--embeddings). gLM2 (--arch glm2): each contig becomes,
    per element, its strand token and its amino acids (CDS) or nucleotides (IGS),
    as the published tokenizer reads them, cut into chunks of --context tokens. Validation contigs
    are held out whole. Multi-GPU or multi-node: launch the same command with
    torchrun.
    """
    from glmkit.commands.pretrain import PretrainOptions, run_pretrain

    if init:   # the model sets the family and its shape: --arch and --preset only if the user gave them
        ctx = click.get_current_context()
        given = {name: ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT
                 for name in ("arch", "preset")}
        if given["preset"]:
            raise GlmkitUsageError(f"--preset: the model's shape comes from --init {init}")
        if not given["arch"]:
            from glmkit.models.registry import family_of

            params["arch"] = family_of(init).key if Path(init).is_dir() else params["arch"]
    options = PretrainOptions(threads=threads, **params)
    run_pretrain(list(elements), embeddings, output, options, resume=resume, force=force, init=init)


@command("contextualize", "glmkit contextualize corpus.zarr -e embeddings.zarr -m glm/ -o context.zarr --attention")
@click.argument("elements", nargs=-1, required=True, metavar="ELEMENTS...")
@click.option("--embeddings", "-e", help="Embedding store covering the genes of ELEMENTS (gLM models only).")
@click.option("--model", "-m", "model_path", required=True,
              help="glmkit pretrain output folder (or its checkpoint/), gLM or gLM2; or a published gLM2 folder.")
@click.option("--output", "-o", required=True, help="Context store to write.")
@click.option("--layer", type=click.IntRange(min=0), help="Layer of the gene embeddings [default: the last].")
@click.option("--attention", is_flag=True, help="Also store symmetrised attention, all layers and heads, per window.")
@click.option("--attention-queries", type=click.Choice(ATTENTION_QUERIES), default=ContextOptions.attention_queries, show_default=True,
              help="With --attention: plain: one pass over each window, as the gLM paper; masked: each gene's row of "
                   "the maps from a pass with that gene masked, the attention training shapes (a pass per gene; "
                   "operons from it fit better, docs/benchmarks.md).")
@click.option("--predictions", is_flag=True, help="Also mask each gene in turn and store predictions, likelihoods, labels.")
@click.option("--window-genes", type=click.IntRange(min=1), default=ContextOptions.window_genes, show_default=True,
              help="Genes per window.")
@click.option("--batch-size", type=click.IntRange(min=1), default=ContextOptions.batch_size, show_default=True, help="Windows per batch.")
@click.option("--windows", type=click.Choice(WINDOWS), default=ContextOptions.windows, show_default=True,
              help="centred: windows overlapping by half, each gene from the one it is most central in; reference: "
                   "consecutive --window-genes sub-contigs, as the gLM's batch_data.py cuts them.")
@click.option("--inputs", is_flag=True, help="Also store each gene's input features and labels (genes/input, "
                                             "genes/label), to check them against other tools.")
@click.option("--context", type=click.IntRange(min=3), default=ContextOptions.context, show_default=True,
              help="gLM2: tokens per chunk (contigs are cut at element boundaries) and per row.")
@click.option("--dtype", type=click.Choice(STORED_DTYPES), default=ContextOptions.dtype, show_default=True)
@device_options
@threads_option
@force_option
def contextualize_command(elements, embeddings, model_path, output, force, threads, **params):
    """Contextualised gene and contig embeddings (and attention) from a trained gLM or gLM2.

    gLM: genes are read in windows of 30 overlapping by half; each gene keeps
    the window in which it is most central. gLM2: each contig's tokens, cut
    into chunks of --context; an element's embedding is the mean over its
    residues. Contig embedding = mean of its genes (gLM) or elements (gLM2).
    """
    from glmkit.commands.contextualize import ContextOptions, run_contextualize

    options = ContextOptions(threads=threads, **params)
    run_contextualize(list(elements), embeddings, model_path, output, options, force=force)


@command("import-glm", "glmkit import-glm glm/glm.bin --norm data/norm.pkl --pca data/pca.pkl -o glm-published/")
@click.argument("glm_bin", metavar="GLM_BIN")
@click.option("--output", "-o", required=True, help="Model folder to write (what contextualize -m takes).")
@click.option("--norm", help="The release's norm.pkl [default: beside GLM_BIN].")
@click.option("--pca", help="The release's pca.pkl [default: beside GLM_BIN].")
@click.option("--operon-predictor", help="The release's operon_predictor.pkl [default: beside GLM_BIN, if there].")
@click.option("--embedding-model", help="ESM2 the embeddings must come from [default: esm2_t33_650M_UR50D, the "
                                        "published gLM's].")
@click.option("--embedding-layer", type=click.IntRange(min=0), help="Its layer [default: 33, the published gLM's].")
@force_option
def import_glm_command(glm_bin, output, force, **params):
    """Turn the gLM authors' release into a glmkit model.

    Reads glm.bin (weights), norm.pkl and pca.pkl (the input standardisation and
    label PCA) and operon_predictor.pkl, with a loader that admits plain data
    only. contextualize then runs the model with the reference's arithmetic.
    """
    from glmkit.commands.glm_release import run_import_glm

    run_import_glm(glm_bin, output, force=force, **params)


@command("export-glm", "glmkit export-glm glm/ -o glm-release/")
@click.argument("model_path", metavar="MODEL")
@click.option("--output", "-o", required=True, help="Folder to write glm.bin, norm.pkl, pca.pkl (and "
                                                    "operon_predictor.pkl) into.")
@force_option
def export_glm_command(model_path, output, force):
    """Write a glmkit gLM in the gLM authors' release layout.

    For the reference code and its users; glmkit.json beside the files lets
    import-glm restore exactly this model.
    """
    from glmkit.commands.glm_release import run_export_glm

    run_export_glm(model_path, output, force=force)


@command("jacobian", "glmkit jacobian moda_modc.fasta -m esm2_t33_650M_UR50D -o contacts.npy --device cuda")
@click.argument("input_path", metavar="INPUT")
@click.option("--model", "-m", "model_spec", required=True,
              help="ESM2 (fair-esm name, .pt file or Hugging Face folder, with its LM head), or gLM2 (a glmkit "
                   "pretrain --arch glm2 folder or a published gLM2 folder).")
@click.option("--output", "-o", required=True, help="Contact map: .npy (the matrix) or .zarr (with what each row is).")
@click.option("--region", help="With an element store as INPUT: CONTIG or CONTIG:FIRST-LAST (element numbers, "
                                "1-based).")
@click.option("--fast", is_flag=True, help="Substitute <mask> at each position instead of every token.")
@click.option("--fast-mode", type=click.Choice(FAST_MODES), default=JacobianOptions.fast_mode, show_default=True,
              help="With --fast on a gLM2: glmkit's map, or the gLM2 notebook's (its <mask> row copied to every "
                   "substitute of the position's modality: for one modality the same map times 1.826).")
@click.option("--tsv", help="Top contacts [default: OUTPUT with .tsv].")
@click.option("--png", help="Picture of the map [default: OUTPUT with .png].")
@click.option("--top", type=click.IntRange(min=1), default=JacobianOptions.top, show_default=True, help="Rows of the TSV.")
@click.option("--min-separation", type=click.IntRange(min=1), default=JacobianOptions.min_separation, show_default=True,
              help="Within one element, leave pairs closer than this out of the TSV.")
@click.option("--batch-size", type=click.IntRange(min=1),
              help="Mutant sequences per forward pass [default: 64 on GPU; on CPU 1, with --threads passes side by "
                   "side, one thread each; 3 with one thread].")
@click.option("--block", type=click.IntRange(min=1), default=JacobianOptions.block, show_default=True,
              help="Positions per saved block (a rerun after a crash resumes from finished blocks).")
@device_options
@threads_option
@force_option
def jacobian_command(input_path, model_spec, output, force, threads, **params):
    """Contact maps from a language model's categorical Jacobian (ESM2 or gLM2).

    INPUT is a FASTA file whose records are read in order as one sequence
    (proteins, or DNA for gLM2: e.g. two interacting proteins), or an element
    store with --region. Every position is substituted by every amino acid (and
    nucleotide, for gLM2); the logit changes, centred, normed and corrected
    (APC), give the map. Memory stays bounded; the work folder holds the
    Jacobian on disk.
    """
    from glmkit.commands.jacobian import JacobianOptions, run_jacobian

    run_jacobian(input_path, model_spec, output, JacobianOptions(threads=threads, **params), force=force)


@command("validate", "glmkit validate elements.zarr embeddings.zarr context.zarr")
@click.argument("stores", nargs=-1, required=True, metavar="STORE...")
def validate_command(stores):
    """Check stores fully: every chunk present and intact, shapes and offsets as recorded.

    Prints one line per store (path, ok or damaged, what); exits 1 if any is damaged.
    Reading commands check each chunk they read; this checks all of them.
    """
    from glmkit.commands.validate import run_validate

    run_validate(stores)


@command("demo", "glmkit demo glmkit-demo/ --quick")
@click.argument("outdir", default="glmkit-demo", required=False)
@click.option("--quick", is_flag=True, help="Every stage at minimal sizes (under a minute on 2 cores; too short "
                                           "for the models to clear their baselines).")
@click.option("--plm", help="A real ESM2 instead of the random one built here: fair-esm name "
                            "(esm2_t33_650M_UR50D), .pt file or Hugging Face folder.")
@click.option("--device", default=DemoOptions.device, show_default=True, help="auto, cpu, cuda or cuda:N.")
@threads_option
@force_option
def demo_command(outdir, quick, plm, device, threads, force):
    """Run every stage: real genomes shipped with pyrodigal, models trained on a planted grammar.

    The real genomes (no download needed) go through call, filter, embed
    (a random-weight ESM2 unless --plm), contextualize, jacobian and dedup;
    the gLM and gLM2 are trained on glmkit's synthetic corpus and scored on
    held-out genomes against baselines. Writes every stage's outputs, a
    summary table (summary.tsv, with a `learned` column), PNGs and an
    index.html that shows them into OUTDIR (default: glmkit-demo).
    """
    from glmkit.commands.demo import DemoOptions, run_demo

    run_demo(outdir, DemoOptions(quick=quick, plm=plm, device=device, threads=threads), force=force)


@cli.group("operons", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def operons_group():
    """Operons from the gLM's attention: fit a classifier, predict, evaluate.

    Features of each pair of neighbouring genes: the attention between them in
    every layer and head (contextualize --attention). Baselines from gene
    distance and strand, and a combined model, for comparison.
    """


def _operon_inputs(func):
    func = click.option("--elements", "-e", "elements", multiple=True, required=True,
                        help="The element store(s) contextualize read (gene coordinates and strands); repeatable.")(func)
    return click.argument("context", metavar="CONTEXT")(func)


def _known_options(func):
    func = click.option("--annotation", help="GFF3 annotation of the same assembly (RefSeq's): carries gene names "
                                             "to coordinates, matched to the called genes by stop codon (not needed "
                                             "for element stores from `glmkit genes`, which carry the names).")(func)
    return click.option("--known", required=True, help="Known operons: RegulonDB OperonSet.txt, or a TSV with "
                                                       "gene_a, gene_b, label (1 same operon, 0 not).")(func)


@command("fit", "glmkit operons fit context.zarr -e genes.zarr --known OperonSet.txt --annotation genome.gff "
         "-o operons.safetensors", group=operons_group)
@_operon_inputs
@_known_options
@click.option("--output", "-o", required=True, help="Classifier file to write (.safetensors).")
@click.option("--log-attention", is_flag=True, help="Attention features: each head's attention and its log (a "
                                                    "logistic regression on both; the classifier records it).")
@click.option("--features", type=click.Choice(KINDS), default=OperonOptions.features,
              show_default=True, help="attention: the paper's; distance-strand: the classic baseline; combined: both.")
@force_option
def operons_fit_command(context, elements, known, annotation, output, features, log_attention, force):
    """Fit a logistic regression of same-operon on neighbouring gene pairs."""
    from glmkit.commands.operons import OperonOptions, run_fit

    run_fit(context, list(elements), known, annotation, output,
            OperonOptions(features=features, log_attention=log_attention), force=force)


@command("predict", "glmkit operons predict context.zarr -e genes.zarr -c operons.safetensors -o pairs.tsv "
         "--gff operons.gff", group=operons_group)
@_operon_inputs
@click.option("--classifier", "-c", required=True, help="A classifier from `operons fit`, or a model folder "
                                                        "holding an imported one (import-glm --operon-predictor).")
@click.option("--output", "-o", required=True, help="TSV, one row per neighbouring pair ('-' for stdout).")
@click.option("--gff", help="Also write operons (runs of linked genes) as GFF3.")
@click.option("--threshold", type=click.FloatRange(0, 1), default=OperonOptions.threshold, show_default=True,
              help="Probability from which a pair is called same-operon.")
@force_option
def operons_predict_command(context, elements, classifier, output, gff, threshold, force):
    """Call same-operon pairs and operons in any genome's context store."""
    from glmkit.commands.operons import OperonOptions, run_predict

    run_predict(context, list(elements), classifier, output, gff, OperonOptions(threshold=threshold), force=force)


@command("eval", "glmkit operons eval context.zarr -e genes.zarr --known OperonSet.txt --annotation genome.gff "
         "-o operon-eval/", group=operons_group)
@_operon_inputs
@_known_options
@click.option("--output", "-o", required=True, help="Folder: report.tsv, summary.json, pr.png, heads.png, "
                                                    "head_correlation.tsv.")
@click.option("--folds", type=click.IntRange(min=2), default=OperonOptions.folds, show_default=True,
              help="Cross-validation folds, grouped by contig (or blocks of consecutive pairs).")
@click.option("--log-attention", is_flag=True, help="Attention features: each head's attention and its log.")
@force_option
def operons_eval_command(context, elements, known, annotation, output, folds, log_attention, force):
    """Cross-validated average precision: attention vs distance-strand vs combined; best head."""
    from glmkit.commands.operons import OperonOptions, run_eval

    run_eval(context, list(elements), known, annotation, output,
             OperonOptions(folds=folds, log_attention=log_attention), force=force)


@command("paralog-match", "glmkit paralog-match queries.faa candidates.faa -e embeddings.zarr -m glm/ "
         "-o matches.tsv --truth pairs.tsv")
@click.argument("queries", metavar="QUERIES")
@click.argument("candidates", metavar="CANDIDATES")
@click.option("--embeddings", "-e", required=True, help="Embedding store holding the queries and candidates.")
@click.option("--model", "-m", "model_path", required=True, help="A gLM (pretrain output or import-glm folder).")
@click.option("--output", "-o", required=True, help="TSV of the top candidates per query ('-' for stdout).")
@click.option("--top-k", type=click.IntRange(min=1), default=ParalogOptions.top_k, show_default=True, help="Candidates kept per query.")
@click.option("--truth", help="TSV with query, partner columns: score exact- and cluster-correct matches.")
@click.option("--report", help="With --truth: write the scores and the random baseline as JSON here.")
@click.option("--cluster-id", type=click.FloatRange(0, 1), default=ParalogOptions.cluster_id, show_default=True,
              help="MMseqs2 identity of the candidate clusters for cluster-correct (0: skip, no MMseqs2 needed).")
@click.option("--draws", type=click.IntRange(min=1), default=ParalogOptions.draws, show_default=True,
              help="Random-prediction draws of the baseline.")
@click.option("--device", default=ParalogOptions.device, show_default=True, help="auto, cpu, cuda or cuda:N.")
@threads_option
@force_option
def paralog_match_command(queries, candidates, embeddings, model_path, output, truth, report, force, **params):
    """Rank candidate partners of each query by the gLM's masked predictions.

    QUERIES, CANDIDATES: protein FASTA files or element stores, embedded in the
    store given. Each query sits between two masked genes; candidates are ranked
    by their distance to the most likely prediction on either side.
    """
    from glmkit.commands.paralog_match import ParalogOptions, run_paralog_match

    if report and not truth:
        raise click.BadParameter("goes with --truth", param_hint="--report")
    run_paralog_match([queries], [candidates], embeddings, model_path, output, truth, report,
                      ParalogOptions(**params), force=force)


@cli.group("dedup", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def dedup_group():
    """Balance a corpus: semantic deduplication (SemDeDup) and MMseqs2 protein clustering.

    `dedup semantic` runs the whole SemDeDup job in one process. On a cluster,
    run its steps as array jobs instead: `fit` (one job, on a sample), `assign
    --shard K/N` and `prune --shard K/N` (N jobs each), then `merge`; the
    result is the same, byte for byte.
    """


def _semantic_options(func):
    func = click.option("--level", type=click.Choice(LEVELS), default=SemanticOptions.level, show_default=True,
                        help="Rows of a context store to deduplicate (an embedding store: gene, i.e. proteins).")(func)
    return func


def _fit_options(func):
    func = click.option("--clusters", "-k", type=click.IntRange(min=1),
                        help="k-means clusters [default: one per 1,000 items].")(func)
    func = click.option("--sample", type=click.IntRange(min=1), default=SemanticOptions.sample, show_default=True,
                        help="Items per centroid the k-means is fitted on (a random sample of the input).")(func)
    func = click.option("--iterations", type=click.IntRange(min=1), default=SemanticOptions.iterations, show_default=True,
                        help="k-means iterations.")(func)
    func = click.option("--coarse", type=click.IntRange(min=0), help="Two-level k-means: this many coarse cells, "
                        "each with its own share of the clusters; 0: one level [default: one level below 4,096 "
                        "clusters, sqrt(clusters) cells from there].")(func)
    func = click.option("--buckets", type=click.IntRange(min=1), help="Buckets of clusters: the unit of pruning "
                        "work and memory, and the most prune shares [default: one per 10,000 items, at least 16].")(func)
    return func


def _prune_options(func):
    func = click.option("--eps", "eps", type=click.FloatRange(0, 1, min_open=True), multiple=True,
                        help="Threshold: an item is pruned when its similarity to an item before it in the keep order exceeds "
                             "1 - eps; repeatable [default: 2e-3, the OMG paper's].")(func)
    func = click.option("--keep-order", type=click.Choice(KEEP_ORDERS), default=SemanticOptions.keep_order,
                        show_default=True, help="Which item of a near-duplicate group survives: hard = farthest from "
                                                "its centroid (SemDeDup's default), easy = nearest, random.")(func)
    func = click.option("--block", type=click.IntRange(min=16), default=SemanticOptions.block, show_default=True,
                        help="Items per block of the similarity computation (memory: block^2 floats).")(func)
    return func


def _seed_option(func):
    return click.option("--seed", type=int, default=SemanticOptions.seed, show_default=True,
                        help="Seed of the sample, the k-means and the random keep order.")(func)


def _semantic(params: dict):
    from glmkit.commands.dedup import SemanticOptions

    if "eps" in params:
        params["eps"] = tuple(params["eps"]) or (2e-3,)
    return SemanticOptions(**params)


@command("semantic", "glmkit dedup semantic context.zarr -o dedup/ --eps 2e-3 --eps 1e-2", group=dedup_group)
@click.argument("input_path", metavar="INPUT")
@click.option("--output", "-o", required=True, help="Folder: dedup.tsv, summary.tsv, remaining.png.")
@_semantic_options
@_fit_options
@_prune_options
@_seed_option
@threads_option
@force_option
def dedup_semantic_command(input_path, output, force, **params):
    """Prune near-duplicates in embedding space (SemDeDup), in bounded memory.

    INPUT: a context store (contig or gene embeddings) or an embedding store.
    Writes one row per item (cluster, max similarity to an item before it in
    the keep order, the id of that item, keep 1/0 per --eps), the pruned
    fraction per threshold and a curve of the fraction kept. Apply it with
    `glmkit filter --keep dedup/dedup.tsv`.
    """
    from glmkit.commands.dedup import run_semantic

    run_semantic(input_path, output, _semantic(params), force=force)


@command("fit", "glmkit dedup fit context.zarr -o centroids.zarr -k 5000", group=dedup_group)
@click.argument("input_path", metavar="INPUT")
@click.option("--output", "-o", required=True, help="Centroid store to write (Zarr).")
@_semantic_options
@_fit_options
@_seed_option
@threads_option
@force_option
def dedup_fit_command(input_path, output, force, **params):
    """Step 1 of 4: spherical k-means on a sample of INPUT (one job: it reads the sample only)."""
    from glmkit.commands.dedup import run_fit

    run_fit(input_path, output, _semantic(params), force=force)


@command("assign", "glmkit dedup assign context.zarr -c centroids.zarr -o assign-3.d --shard 3/10",
         group=dedup_group)
@click.argument("input_path", metavar="INPUT")
@click.option("--centroids", "-c", required=True, help="From `dedup fit` on the same INPUT.")
@click.option("--output", "-o", required=True, help="Assignment share to write (folder).")
@click.option("--shard", callback=_parse_shard, metavar="K/N", help="Assign the K-th of N row ranges.")
@_semantic_options
@threads_option
@force_option
def dedup_assign_command(input_path, centroids, output, force, **params):
    """Step 2 of 4: every item (of one share) to its nearest centroid, into buckets on disk."""
    from glmkit.commands.dedup import run_assign

    run_assign(input_path, centroids, output, _semantic(params), force=force)


@command("prune", "glmkit dedup prune assign-*.d -c centroids.zarr -o prune-2.d --shard 2/4 --eps 2e-3",
         group=dedup_group)
@click.argument("assign_folders", nargs=-1, required=True, metavar="ASSIGN...")
@click.option("--centroids", "-c", required=True, help="The centroids the shares were assigned with.")
@click.option("--output", "-o", required=True, help="Prune share to write (folder).")
@click.option("--shard", callback=_parse_shard, metavar="K/N", help="Prune the K-th of N ranges of buckets.")
@_prune_options
@_seed_option
@threads_option
@force_option
def dedup_prune_command(assign_folders, centroids, output, force, **params):
    """Step 3 of 4: within each cluster, every item's max similarity to the items before it (all ASSIGN shares)."""
    from glmkit.commands.dedup import run_prune

    run_prune(list(assign_folders), centroids, output, _semantic(params), force=force)


@command("merge", "glmkit dedup merge prune-*.d -o dedup/", group=dedup_group)
@click.argument("prune_folders", nargs=-1, required=True, metavar="PRUNE...")
@click.option("--output", "-o", required=True, help="Folder: dedup.tsv, summary.tsv, remaining.png.")
@force_option
def dedup_merge_command(prune_folders, output, force):
    """Step 4 of 4: one table, summary and curve from every prune share."""
    from glmkit.commands.dedup import run_merge

    run_merge(list(prune_folders), output, force=force)


@command("proteins", "glmkit dedup proteins genes.zarr -o prot50/ --preset prot50 -t 16", group=dedup_group)
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option("--output", "-o", required=True, help="Folder: clusters.tsv (representative, member), "
                                                    "representatives.faa.")
@click.option("--preset", type=click.Choice(list(PROTEIN_PRESETS)),
              help="representatives: 90 % identity, 90 % coverage (the gLM's); prot50: fragments out at 90/90 "
                   "(cov-mode 1), then 50 % identity, 90 % coverage, singletons dropped (OMG_prot50) "
                   "[default: representatives].")
@click.option("--min-seq-id", type=click.FloatRange(0, 1), help="One linclust at this identity instead of a preset.")
@click.option("--coverage", "-c", type=click.FloatRange(0, 1), default=ProteinOptions.coverage, show_default=True,
              help="With --min-seq-id: MMseqs2 -c.")
@click.option("--cov-mode", type=click.IntRange(0, 5), default=ProteinOptions.cov_mode, show_default=True,
              help="With --min-seq-id: MMseqs2 --cov-mode (0 both, 1 target, 2 query...).")
@click.option("--drop-singletons", is_flag=True, help="Leave out clusters of one protein.")
@click.option("--tmpdir", help="MMseqs2's temporary folder (fast local disk) [default: beside OUTPUT].")
@click.option("--deterministic", is_flag=True, help="One MMseqs2 thread: the same clusters on every run "
                                                    "(linclust's can vary with the thread count).")
@threads_option
@force_option
def dedup_proteins_command(inputs, output, force, **params):
    """Cluster proteins with MMseqs2 linclust (FASTA files or element stores)."""
    from glmkit.commands.dedup import ProteinOptions, run_proteins

    if params["preset"] and params["min_seq_id"] is not None:
        raise click.BadParameter("give a --preset or --min-seq-id, not both", param_hint="--min-seq-id")
    run_proteins(list(inputs), output, ProteinOptions(**params), force=force)


def main() -> None:
    from glmkit import stop

    stop.install()  # SIGTERM (schedulers) like Ctrl-C: clean up, say how to resume
    if len(sys.argv) > 1 and sys.argv[1] in MODEL_COMMANDS:  # this process is glmkit's own: process-wide settings
        from glmkit.resources import keep_freed_memory

        keep_freed_memory()
    try:
        cli(prog_name="glmkit")
    finally:
        gc.freeze()  # the process ends next: spare Python's exit-time collection a scan of everything (~20 ms)


if __name__ == "__main__":
    sys.exit(main())
