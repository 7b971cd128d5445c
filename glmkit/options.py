"""Every command's options and their defaults, declared once: the library's dataclasses, which glmkit/cli.py
reads its defaults and choices from (tests/test_cli.py checks they agree). Import-light (no numpy, no torch):
`glmkit --help` reads it."""

from __future__ import annotations

from dataclasses import dataclass

# choices shared by several commands
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
STORED_DTYPES = ("float32", "float16")


# -- call -------------------------------------------------------------------------------------------------------------

MODES = ("meta", "single")


@dataclass
class CallOptions:
    mode: str = "meta"                   # "meta" or "single"
    translation_table: int | None = None  # single: table to train with (default 11); meta: restrict the models
    closed: bool = False
    mask: bool = False
    min_gene: int = 90
    min_edge_gene: int = 60
    max_overlap: int = 60
    threads: int = 1


@dataclass
class GenesOptions:
    translation_table: int = 11           # for CDS whose annotation names none


# -- filter -----------------------------------------------------------------------------------------------------------

@dataclass
class FilterOptions:
    min_contig_length: int = 2000
    min_elements: int = 7
    min_cds: int = 3
    max_invalid_fraction: float = 0.2
    max_cds_aa: int = 15000
    max_igs_bp: int = 4000
    max_elements: int = 1000
    keep_edges: bool = False
    glm_subcontigs: bool = False
    subcontig_genes: int = 30
    min_subcontig_genes: int = 15
    keep: str | None = None             # a `dedup semantic` table: contigs marked 0 are dropped
    keep_column: str | None = None      # which keep column (the table's only one if not given)


# -- embed ------------------------------------------------------------------------------------------------------------

LONG_MODES = ("truncate", "window")


@dataclass
class EmbedOptions:
    model: str | None = None          # fair-esm name, .pt file or Hugging Face folder
    layer: int | None = None          # default: the last
    max_residues: int = 1022
    long: str = "truncate"            # or "window"
    max_tokens: int = 4096            # token budget per batch, padding included
    device: str = "auto"
    precision: str = "auto"
    threads: int = 1
    dtype: str = "float32"            # stored embeddings: float32 or float16
    chunk_rows: int = 1024
    shard: tuple[int, int] | None = None   # (k, n): embed the k-th of n slices (1-based)
    cluster_id: float | None = None        # MMseqs2 linclust identity; embed representatives only
    coverage: float = 0.9
    nucleotide_check: bool = True          # refuse FASTA records of nucleotide letters alone
    import_embeddings: str | None = None   # embeddings computed elsewhere (glmkit.io.imported_embeddings)
    import_ids: str | None = None          # row ids of an imported .npy
    import_model: str | None = None        # the model that computed them, as the user states it


# -- pretrain ---------------------------------------------------------------------------------------------------------

RECIPES = ("glmkit", "reference")


@dataclass
class PretrainOptions:
    arch: str = "glm"               # or "glm2"
    preset: str = "small"
    num_layers: int | None = None
    hidden_size: int | None = None
    num_heads: int | None = None
    dropout: float | None = None    # None: the preset's
    max_steps: int = 10_000
    batch_size: int = 32            # rows of packed sub-contigs per optimiser step, over all processes
    accumulate: int = 1             # micro-steps per optimiser step (batch_size / accumulate rows each)
    lr: float | None = None           # None: the family's recipe (its ModelSpec)
    warmup_steps: int | None = None  # None: the paper's 5,000, at most a tenth of max_steps
    weight_decay: float | None = None
    grad_clip: float = 1.0
    mask_fraction: float | None = None
    context: int = 4096             # gLM2: tokens per chunk and per row
    val_fraction: float = 0.05
    val_every: int = 500
    checkpoint_every: int = 1_000
    log_every: int = 50
    max_minutes: float | None = None
    seed: int = 0
    subcontig_genes: int = 30
    min_subcontig_genes: int = 15
    recipe: str = "glmkit"          # or "reference": the gLM train.py's recipe (see glmkit/models/glm/task.py)
    corpus: str | None = None       # a corpus store to reuse or build (default: OUTPUT/corpus.zarr)
    device: str = "auto"
    precision: str = "auto"
    threads: int = 1
    compile_model: bool = False
    static_shapes: bool = False     # every step the same tensor shapes (CUDA graphs; see glmkit/train.py)


# -- contextualize ----------------------------------------------------------------------------------------------------

WINDOWS = ("centred", "reference")
ATTENTION_QUERIES = ("plain", "masked")


@dataclass
class ContextOptions:
    layer: int | None = None
    attention: bool = False
    attention_queries: str = "plain"   # or "masked": each gene's row of the maps from a pass with it masked
    predictions: bool = False
    window_genes: int = 30
    batch_size: int = 64
    dtype: str = "float32"
    device: str = "auto"
    precision: str = "auto"
    threads: int = 1
    windows: str = "centred"    # or "reference": consecutive sub-contigs, as the gLM's batch_data.py cuts them
    inputs: bool = False        # also store each gene's input features and labels
    context: int = 4096         # gLM2: tokens per chunk and per row


# -- operons ----------------------------------------------------------------------------------------------------------

KINDS = ("attention", "distance-strand", "combined")


@dataclass
class OperonOptions:
    features: str = "attention"     # what `fit` uses: attention, distance-strand or combined
    folds: int = 5
    threshold: float = 0.5          # `predict`: probability from which a pair is called "same operon"
    seed: int = 16                  # the reference's random_state
    log_attention: bool = False     # attention features: each head's attention and its log (fit and eval)


# -- paralog-match ----------------------------------------------------------------------------------------------------

@dataclass
class ParalogOptions:
    top_k: int = 10
    cluster_id: float = 0.5       # 0: no clusters (no mmseqs needed)
    coverage: float = 0.8
    draws: int = 1000             # random-prediction baseline
    seed: int = 0
    batch_size: int = 512         # queries per forward pass
    device: str = "auto"
    threads: int = 1


# -- jacobian ---------------------------------------------------------------------------------------------------------

FAST_MODES = ("glmkit", "notebook")


@dataclass
class JacobianOptions:
    region: str | None = None       # element store input: CONTIG or CONTIG:FIRST-LAST (elements, 1-based)
    fast: bool = False              # substitute <mask> only
    fast_mode: str = "glmkit"       # notebook: as the gLM2 notebook spreads its <mask> row (docs/commands/jacobian.md)
    batch_size: int | None = None   # sequences per forward pass; None: 64 on GPUs; on CPU 1, with --threads
                                    # passes side by side (3 on one thread: as fast as 4 or 8 there, and less
                                    # memory: the passes' buffers are what memory holds beyond torch)
    block: int = 16                 # positions per saved block (the unit of resume)
    top: int = 100                  # rows of the top-contacts TSV
    min_separation: int = 6         # within one element, contacts closer than this are left out of the TSV
    tsv: str | None = None          # default: OUTPUT's stem + .tsv
    png: str | None = None          # default: OUTPUT's stem + .png
    device: str = "auto"
    precision: str = "auto"
    threads: int = 1


# -- dedup semantic (fit, assign, prune) ------------------------------------------------------------------------------

KEEP_ORDERS = ("hard", "easy", "random")
LEVELS = ("contig", "gene")


@dataclass
class SemanticOptions:
    level: str = "contig"                 # contig | gene (what the rows of a context store are)
    clusters: int | None = None           # None: one per ITEMS_PER_CLUSTER items
    sample: int = 256                     # k-means points per centroid (faiss's own default cap)
    iterations: int = 20
    seed: int = 0
    keep_order: str = "hard"
    eps: tuple[float, ...] = (2e-3,)
    buckets: int | None = None
    coarse: int | None = None             # two-level k-means cells; None: see fit (FLAT_SAMPLE_BYTES); 0: one
    block: int = 1024                     # items per similarity block: block^2 floats per thread
    threads: int = 0
    shard: tuple[int, int] | None = None


# -- dedup proteins ---------------------------------------------------------------------------------------------------

# (min-seq-id, coverage, cov-mode) of each clustering step, and whether singletons are dropped at the end
PROTEIN_PRESETS = {
    "representatives": ([(0.9, 0.9, 0)], False),            # the gLM: genes mapped to 90 % representatives
    "prot50": ([(0.9, 0.9, 1), (0.5, 0.9, 0)], True),      # OMG_prot50: fragments out, then 50 %, no singletons
}


@dataclass
class ProteinOptions:
    preset: str | None = None           # None: representatives, unless --min-seq-id is given
    min_seq_id: float | None = None
    coverage: float = 0.8
    cov_mode: int = 0
    drop_singletons: bool = False
    threads: int = 0
    tmpdir: str | None = None
    deterministic: bool = False         # one MMseqs2 thread: the same clusters on every run

    def steps(self) -> tuple[list[tuple[float, float, int]], bool]:
        if self.min_seq_id is not None:
            return [(self.min_seq_id, self.coverage, self.cov_mode)], self.drop_singletons
        steps, drop = PROTEIN_PRESETS[self.preset or "representatives"]
        return steps, drop or self.drop_singletons


# -- demo -------------------------------------------------------------------------------------------------------------

@dataclass
class DemoOptions:
    quick: bool = False          # the CI's: every stage, minimal sizes, under a minute on 2 cores
    plm: str | None = None       # a real ESM2 (fair-esm name, .pt, Hugging Face folder); None: random, built here
    device: str = "auto"
    threads: int = 1
