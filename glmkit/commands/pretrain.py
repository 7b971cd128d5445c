"""`glmkit pretrain`: train the gLM on element and embedding stores.

One process on CPU, one GPU, or many through `torchrun`. The corpus is first
turned into a corpus store (glmkit/io/corpus.py: genes with their embeddings in
corpus order, sub-contigs as arrays), built once and reused by every run on
the same inputs; the normalisation and label PCA are fitted on the training
proteins in two streaming passes; then the training loop (glmkit/train.py)
runs the gLM task (glmkit/models/glm/task.py). Memory is bounded by the batch, the
model and fixed caches, not by the corpus (bench/scale.py shows it).

Everything random is a function of (seed, step, row): data order, masks, and
every process's generators saved with each checkpoint, so `--resume`
continues a killed run exactly.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from glmkit.errors import GlmkitError, GlmkitUsageError
from glmkit.io.files import atomic_outputs, claim_outputs, clear_work_folder, publish, remove, work_folder

log = logging.getLogger("glmkit")
PAPER_WARMUP = 5_000
# options that, changed on --resume, would train another model or draw other data: refused, naming the option
RESUME_MUST_MATCH = ("arch", "context", "batch_size", "accumulate", "seed", "preset", "num_layers", "hidden_size", "num_heads", "dropout",
                     "subcontig_genes", "min_subcontig_genes", "val_fraction", "mask_fraction", "recipe")


ARCHITECTURES = {"glm": "gLM", "glm2": "gLM2"}
PRESETS = {"glm": ("paper", "small", "tiny"), "glm2": ("650M", "150M", "small", "tiny")}
# what differs between the two models' recipes (None in PretrainOptions: the architecture's value from here)
ARCH_DEFAULTS = {
    "glm": {"mask_fraction": 0.15, "lr": 1e-4, "weight_decay": 0.01, "betas": (0.9, 0.999), "schedule": "linear"},
    # the OMG paper: 30 % masking, AdamW betas (0.9, 0.95), weight decay 0.1, cosine decay to 10 %
    "glm2": {"mask_fraction": 0.30, "lr": 1e-3, "weight_decay": 0.1, "betas": (0.9, 0.95), "schedule": "cosine"},
}


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
    lr: float | None = None           # None: ARCH_DEFAULTS
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


def warmup_steps(options: PretrainOptions) -> int:
    """--warmup-steps, or the paper's 5,000 capped at a tenth of the run (a short run would never warm up)."""
    if options.warmup_steps is not None:
        return options.warmup_steps
    return min(PAPER_WARMUP, max(1, options.max_steps // 10))


def resolved(o: PretrainOptions) -> PretrainOptions:
    """The options with the architecture's defaults filled in, checked: what a checkpoint records."""
    if o.arch not in ARCHITECTURES:
        raise GlmkitUsageError(f"--arch {o.arch}: expected {' or '.join(ARCHITECTURES)}")
    if o.preset not in PRESETS[o.arch]:
        raise GlmkitUsageError(f"--preset {o.preset} is not a {ARCHITECTURES[o.arch]} preset: expected one of "
                               f"{', '.join(PRESETS[o.arch])}")
    if o.arch == "glm2" and (o.dropout is not None or o.recipe != "glmkit"):
        raise GlmkitUsageError("--dropout and --recipe are options of the gLM (--arch glm); gLM2 has neither")
    defaults = ARCH_DEFAULTS[o.arch]
    return replace(o, **{k: defaults[k] for k in ("mask_fraction", "lr", "weight_decay") if getattr(o, k) is None})


def loop_options(o: PretrainOptions):
    from glmkit.train import LoopOptions

    o = resolved(o)
    reference = o.recipe == "reference"
    defaults = ARCH_DEFAULTS[o.arch]
    return LoopOptions(max_steps=o.max_steps, max_minutes=o.max_minutes, batch_size=o.batch_size,
                       accumulate=o.accumulate, lr=o.lr, warmup_steps=warmup_steps(o),
                       schedule="constant" if reference else defaults["schedule"],
                       weight_decay=0.0 if reference else o.weight_decay, betas=defaults["betas"],
                       eps=1e-6 if reference else 1e-8, grad_clip=None if reference else o.grad_clip,
                       val_every=o.val_every, checkpoint_every=o.checkpoint_every, log_every=o.log_every,
                       seed=o.seed, device=o.device, precision=o.precision, threads=o.threads,
                       compile_model=o.compile_model)


def _model_config(o: PretrainOptions, **shapes):
    from glmkit.models.glm.model import preset

    if o.arch == "glm2":
        from glmkit.models.glm2.model import glm2_preset

        cfg = glm2_preset(o.preset, depth=o.num_layers, dim=o.hidden_size, heads=o.num_heads)
        if cfg.dim % cfg.heads or (cfg.dim // cfg.heads) % 2:
            raise GlmkitUsageError(f"--hidden-size {cfg.dim} must be a multiple of --num-heads {cfg.heads} with an "
                                   f"even quotient (rotary positions rotate pairs of dimensions)")
        return cfg
    return preset(o.preset, num_layers=o.num_layers, hidden_size=o.hidden_size, num_heads=o.num_heads,
                  dropout=o.dropout, **shapes)


def check_resumable(meta: dict, options: PretrainOptions, world: int, where: Path) -> None:
    """Refuse --resume with options that change the model or the data order, naming the first that differs."""
    saved = meta.get("options", {})
    for key in RESUME_MUST_MATCH:
        if key in saved and saved[key] != getattr(options, key):
            flag = "--" + key.replace("_", "-")
            raise GlmkitUsageError(f"{flag} {getattr(options, key)} differs from the {saved[key]} of the checkpoint "
                                   f"in {where}: resume with the same options, or start over with --force")
    if meta.get("world_size", world) != world:
        raise GlmkitUsageError(f"{where}: trained with {meta['world_size']} process(es), resumed with {world}: "
                               f"the data each process draws would change; use the same number")


def _corpus(element_paths, embedding_path, out: Path, options: PretrainOptions, rank: int, world: int,
            force: bool = False, final: Path | None = None):
    """The corpus store (gLM: genes with embeddings; gLM2: tokens), built (rank 0, under its lock) unless one built
    from these very inputs is there (or, for a run replacing ``final``, in the old output)."""
    from glmkit.io.store import built_from, store_schema

    if options.arch == "glm2":
        from glmkit.models.glm2.corpus import build_token_corpus, token_corpus_parameters
        from glmkit.io.token_corpus import SCHEMA
        from glmkit.io.token_corpus import TokenCorpusStore as Store

        def parameters():
            return token_corpus_parameters(element_paths, options.context)

        def build(tmp):
            build_token_corpus(element_paths, tmp, options.context)
    else:
        from glmkit.models.glm.corpus import build_corpus, corpus_parameters
        from glmkit.io.corpus import SCHEMA
        from glmkit.io.corpus import CorpusStore as Store

        def parameters():
            return corpus_parameters(element_paths, embedding_path, options.subcontig_genes,
                                     options.min_subcontig_genes)

        def build(tmp):
            build_corpus(element_paths, embedding_path, tmp, options.subcontig_genes, options.min_subcontig_genes)
    path = Path(options.corpus) if options.corpus else out / "corpus.zarr"
    if not options.corpus and final is not None and final != out and not path.exists() and \
            built_from(final / "corpus.zarr", SCHEMA, Store, parameters()):
        path = final / "corpus.zarr"   # read where it is; _replace moves it into the new output
    if rank == 0:
        if not built_from(path, SCHEMA, Store, parameters()):
            if path.exists() or path.is_symlink():   # only ever a corpus store glmkit wrote is replaced
                if path.is_symlink() or store_schema(path) != SCHEMA:
                    raise GlmkitError(f"{path}: exists and is not a {ARCHITECTURES[options.arch]} corpus store; "
                                      f"glmkit will not replace it: name another --corpus")
                if options.corpus and not force:
                    raise GlmkitError(f"{path}: a corpus store built from other inputs; use --force to rebuild "
                                      f"it, or name another --corpus")
                log.info(f"pretrain: {path} was built from other inputs: rebuilding it")
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_outputs([str(path)], force=True, inputs=_inputs(element_paths, embedding_path)) as (tmp,):
                build(tmp)
        else:
            log.info(f"pretrain: reusing the corpus store {path}")
    _barrier(world)
    return Store(path)


def _inputs(element_paths, embedding_path) -> list:
    return [*element_paths, *([embedding_path] if embedding_path else [])]


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def run_pretrain(element_paths, embedding_path, output, options: PretrainOptions = PretrainOptions(),
                 resume: bool = False, force: bool = False) -> dict:
    from glmkit.train import distributed

    if options.recipe not in ("glmkit", "reference"):
        raise GlmkitUsageError(f"--recipe {options.recipe}: expected glmkit or reference")
    options = resolved(options)
    if options.arch == "glm" and not embedding_path:
        raise GlmkitUsageError("--embeddings is required for the gLM (--arch glm): it reads ESM2 embeddings")
    if options.arch == "glm2" and embedding_path:
        raise GlmkitUsageError("--embeddings is for the gLM: gLM2 (--arch glm2) reads the element stores' "
                               "sequences")
    _model_config(options)  # shapes the model cannot have are usage errors, before any work
    from glmkit.io.store import require_distinct

    require_distinct(element_paths)
    rank, world, device_spec = distributed(options.device)
    # one run per output folder: rank 0 holds its lock (existing folders are judged below: --resume/--force)
    claim = claim_outputs([output], force=True, inputs=_inputs(element_paths, embedding_path)) if rank == 0 \
        else contextlib.nullcontext()
    with claim:
        out = Path(output)
        run, created = _run_folder(out, resume, force, rank, world)
        try:
            result = _pretrain(element_paths, embedding_path, run, out, options, resume, force, rank, world,
                               device_spec)
        except BaseException:
            if rank == 0 and not (run / "checkpoint").exists() and (created or run != out):
                remove(run)   # a folder this run made, with nothing worth keeping yet
            raise
        if rank == 0 and run != out:
            _replace(out, run)
        return result


def _run_folder(out: Path, resume: bool, force: bool, rank: int, world: int) -> tuple[Path, bool]:
    """Where this run trains, and whether it made that folder. A run that replaces an existing output (--force)
    trains in its work folder (``.NAME.work``) and replaces the old output only when it ends, so a failure or a
    kill keeps the old one (and --resume continues the replacement); every other run trains in the output."""
    staging = work_folder(out)
    # every process judges the folders as they were, before rank 0 changes anything
    occupied = (out.exists() or out.is_symlink()) and \
        (not out.is_dir() or out.is_symlink() or any(p.name != "corpus.zarr" for p in out.iterdir()))
    staged = (staging / "checkpoint" / "config.json").is_file() and not staging.is_symlink()
    _barrier(world)
    if resume:
        run = staging if staged else out
        if not (run / "checkpoint" / "config.json").is_file():
            raise GlmkitError(f"{out}: nothing to resume (no checkpoint/ yet)")
        return run, False
    if occupied and not force:
        raise GlmkitError(f"{out}: output exists; use --resume to continue it or --force to start over")
    created = not out.exists()
    if rank == 0:
        clear_work_folder(staging)   # a replacement that was not resumed
        (staging if occupied else out).mkdir(parents=True, exist_ok=not occupied)
    _barrier(world)
    return (staging, False) if occupied else (out, created)


def _replace(out: Path, run: Path) -> None:
    """Publish a finished replacement over the old output; the old output's corpus store, when this run read
    it (built from the same inputs), moves into the new one first."""
    if not (run / "corpus.zarr").exists() and (out / "corpus.zarr").is_dir() and not out.is_symlink():
        (out / "corpus.zarr").rename(run / "corpus.zarr")
    publish(run, out)


def _pretrain(element_paths, embedding_path, out: Path, final: Path, options: PretrainOptions, resume: bool,
              force: bool, rank: int, world: int, device_spec: str) -> dict:
    """Train in ``out`` (the output, or its work folder while it replaces ``final``)."""
    from glmkit.data.split import choose_split
    from glmkit.io.checkpoint import load_checkpoint
    from glmkit.models.device import resolve_device, resolve_precision, torch_threads
    from glmkit.train import Trainer, log_columns, plot_training_curves, read_log

    device = resolve_device(device_spec)
    amp = resolve_precision(options.precision, device)
    checkpoint = out / "checkpoint"

    with torch_threads(options.threads) if device.type == "cpu" else contextlib.nullcontext():
        meta = state = weights = extras = None
        architecture = ARCHITECTURES[options.arch]
        if resume:
            meta, weights, extras, state = load_checkpoint(checkpoint, architecture, training=True,
                                                           extras=("normalization",) if options.arch == "glm" else ())
            check_resumable(meta, options, world, checkpoint)
            _check_same_inputs(meta, element_paths, embedding_path, options, checkpoint)
        corpus = _corpus(element_paths, embedding_path, out, options, rank, world, force, final)
        items = "chunks" if options.arch == "glm2" else "sub-contigs"
        split, n_train, n_val = choose_split(corpus, options.val_fraction, options.seed,
                                             "chunks" if options.arch == "glm2" else "subcontigs")
        if not n_train:
            raise GlmkitError(f"no training {items} left after holding out the validation contigs")
        if n_train < options.batch_size:  # a step would hold the same items several times over
            raise GlmkitUsageError(f"--batch-size {options.batch_size}: the training split has only {n_train:,} "
                                   f"{items}; use a batch of at most that many rows, or a larger corpus")
        make = _glm2_task if options.arch == "glm2" else _glm_task
        task, described = make(corpus, split, options, meta, extras, checkpoint, embedding_path, rank, world)
        log_rows = read_log(out / "log.tsv", int(state["step"]), log_columns(task)) \
            if state is not None and rank == 0 else []
        trainer = Trainer(task, loop_options(options), out, rank, world, device, amp, state, weights, log_rows)
        log.info(f"pretrain: {n_train:,} training / {n_val:,} validation {items}; {described}; {world} process(es) "
                 f"on {device}, {str(amp).removeprefix('torch.')}"
                 + (f"; resuming at step {trainer.step}" if resume else ""))
        try:
            return trainer.train()
        finally:
            if rank == 0 and (out / "log.tsv").exists():
                plot_training_curves(out / "log.tsv", out / "curves.png", task.curves, architecture)


def _glm_task(corpus, split, options: PretrainOptions, meta, extras, checkpoint: Path, embedding_path, rank, world):
    """The gLM task: its normalisation fitted on the training proteins (or the checkpoint's)."""
    from glmkit.models.glm.normalization import Normalization, fit_normalization
    from glmkit.models.glm.task import GLMRecipe, GLMTask
    from glmkit.models.glm.model import GLMConfig

    if meta is not None:
        norm = Normalization.from_checkpoint(meta, extras["normalization"], checkpoint)
        cfg = GLMConfig.from_dict(meta.get("config"), checkpoint / "config.json")
    else:
        norm = _shared(lambda: fit_normalization(corpus, embedding_path, split), rank, world)
        dim = corpus.embedding.shape[1]
        cfg = _model_config(options, input_dim=dim + 1, label_dim=norm.label_components.shape[1] + 1,
                            max_position_embeddings=max(512, options.subcontig_genes))
    info = {"embedding_model": corpus.attrs["embedding_model"], "options": asdict(options),
            "corpus": corpus.attrs["parameters"]}
    task = GLMTask(corpus, split, norm, cfg, GLMRecipe(options.recipe, options.mask_fraction), options.seed,
                   options.subcontig_genes, info)
    return task, (f"gLM {cfg.num_layers} layers, hidden {cfg.hidden_size}, {cfg.num_heads} heads; recipe "
                  f"{options.recipe}")


def _glm2_task(corpus, split, options: PretrainOptions, meta, extras, checkpoint: Path, embedding_path, rank, world):
    """The gLM2 task, with the training split's token frequencies for the unigram baseline."""
    from glmkit.models.glm2.corpus import training_token_counts
    from glmkit.models.glm2.task import GLM2Task
    from glmkit.models.glm2.model import GLM2Config

    cfg = GLM2Config.from_dict(meta.get("config"), checkpoint / "config.json") if meta is not None \
        else _model_config(options)
    info = {"options": asdict(options), "corpus": corpus.attrs["parameters"]}
    task = GLM2Task(corpus, split, cfg, options.mask_fraction, options.seed, options.context, info,
                    training_token_counts(corpus, split))
    return task, f"gLM2 {cfg.depth} layers, dim {cfg.dim}, {cfg.heads} heads, context {options.context}"


def _shared(compute, rank: int, world: int):
    """``compute()`` on rank 0, handed to every process (one read of the store, not one per process)."""
    if world == 1:
        return compute()
    import torch.distributed as dist

    box = [compute() if rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def check_embedding_model(trained_on: dict, embedding_path: str, where) -> None:
    """The embedding store must come from the ESM2 the checkpoint was trained on (name, checksum, dim, layer)."""
    from glmkit.io.embeddings import EmbeddingStore

    ours = EmbeddingStore(embedding_path).model
    for key in ("name", "sha256", "embed_dim", "layer"):
        if key == "sha256" and None in (trained_on.get(key), ours.get(key)):
            continue  # imported models and embeddings know the ESM2 by name and layer only
        if trained_on.get(key) != ours.get(key):
            raise GlmkitError(f"{embedding_path}: embeddings from {ours.get('name')} ({key} {ours.get(key)}), but "
                              f"{where} was trained on {trained_on.get('name')} ({key} {trained_on.get(key)})")


def _check_same_inputs(meta: dict, element_paths, embedding_path, options: PretrainOptions, where: Path) -> None:
    """Before anything is built: a resumed run must read the very corpus its checkpoint was trained on."""
    from glmkit.models.glm.corpus import corpus_parameters

    if options.arch == "glm2":
        from glmkit.models.glm2.corpus import token_corpus_parameters

        if meta.get("corpus") != token_corpus_parameters(element_paths, options.context):
            raise GlmkitError(f"{where}: the element stores differ from those this checkpoint was trained on; "
                              f"resume with the same inputs")
        return
    check_embedding_model(meta.get("embedding_model", {}), embedding_path, where)
    if meta.get("corpus") and meta["corpus"] != corpus_parameters(element_paths, embedding_path,
                                                                   options.subcontig_genes,
                                                                   options.min_subcontig_genes):
        raise GlmkitError(f"{where}: the element or embedding stores differ from those this checkpoint was trained "
                          f"on; resume with the same inputs")
