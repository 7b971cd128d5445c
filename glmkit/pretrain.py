"""`glmkit pretrain`: train the gLM on element and embedding stores.

One process on CPU, one GPU, or many through `torchrun`. The corpus is first
turned into a corpus store (glmkit/io/corpus.py: genes with their embeddings in
corpus order, sub-contigs as arrays), built once and reused by every run on
the same inputs; the normalisation and label PCA are fitted on the training
proteins in two streaming passes; then the training loop (glmkit/train.py)
runs the gLM task (glmkit/glm_task.py). Memory is bounded by the batch, the
model and fixed caches, not by the corpus (bench/scale.py shows it).

Everything random is a function of (seed, step, row): data order, masks, and
every process's generators saved with each checkpoint, so `--resume`
continues a killed run exactly.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from glmkit.errors import GlmkitError, GlmkitUsageError
from glmkit.io.files import atomic_outputs, claim_outputs, remove

log = logging.getLogger("glmkit")
ARCHITECTURE = "gLM"
PAPER_WARMUP = 5_000
# options that, changed on --resume, would train another model or draw other data: refused, naming the option
RESUME_MUST_MATCH = ("batch_size", "accumulate", "seed", "preset", "num_layers", "hidden_size", "num_heads", "dropout",
                     "subcontig_genes", "min_subcontig_genes", "val_fraction", "mask_fraction", "recipe")


@dataclass
class PretrainOptions:
    preset: str = "small"
    num_layers: int | None = None
    hidden_size: int | None = None
    num_heads: int | None = None
    dropout: float | None = None    # None: the preset's
    max_steps: int = 10_000
    batch_size: int = 32            # rows of packed sub-contigs per optimiser step, over all processes
    accumulate: int = 1             # micro-steps per optimiser step (batch_size / accumulate rows each)
    lr: float = 1e-4
    warmup_steps: int | None = None  # None: the paper's 5,000, at most a tenth of max_steps
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    mask_fraction: float = 0.15
    val_fraction: float = 0.05
    val_every: int = 500
    checkpoint_every: int = 1_000
    log_every: int = 50
    max_minutes: float | None = None
    seed: int = 0
    subcontig_genes: int = 30
    min_subcontig_genes: int = 15
    recipe: str = "glmkit"          # or "reference": the gLM train.py's recipe (see glmkit/glm_task.py)
    corpus: str | None = None       # a corpus store to reuse or build (default: OUTPUT/corpus.zarr)
    device: str = "auto"
    precision: str = "auto"
    threads: int = 1


def warmup_steps(options: PretrainOptions) -> int:
    """--warmup-steps, or the paper's 5,000 capped at a tenth of the run (a short run would never warm up)."""
    if options.warmup_steps is not None:
        return options.warmup_steps
    return min(PAPER_WARMUP, max(1, options.max_steps // 10))


def loop_options(o: PretrainOptions):
    from glmkit.train import LoopOptions

    reference = o.recipe == "reference"
    return LoopOptions(max_steps=o.max_steps, max_minutes=o.max_minutes, batch_size=o.batch_size,
                       accumulate=o.accumulate, lr=o.lr, warmup_steps=warmup_steps(o),
                       schedule="constant" if reference else "linear",
                       weight_decay=0.0 if reference else o.weight_decay, betas=(0.9, 0.999),
                       eps=1e-6 if reference else 1e-8, grad_clip=None if reference else o.grad_clip,
                       val_every=o.val_every, checkpoint_every=o.checkpoint_every, log_every=o.log_every,
                       seed=o.seed, device=o.device, precision=o.precision, threads=o.threads)


def _model_config(o: PretrainOptions, **shapes):
    from glmkit.models.glm import preset

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


def _corpus(element_paths, embedding_path, out: Path, options: PretrainOptions, rank: int, world: int):
    """The corpus store, built (rank 0, under its lock) unless one built from these very inputs is there."""
    from glmkit.glm_data import build_corpus, corpus_matches, corpus_parameters
    from glmkit.io.corpus import CorpusStore

    path = Path(options.corpus) if options.corpus else out / "corpus.zarr"
    if rank == 0:
        parameters = corpus_parameters(element_paths, embedding_path, options.subcontig_genes,
                                       options.min_subcontig_genes)
        if not corpus_matches(path, parameters):
            if path.exists():
                log.info(f"pretrain: {path} was built from other inputs: rebuilding it")
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_outputs([str(path)], force=True, inputs=[*element_paths, embedding_path]) as (tmp,):
                build_corpus(element_paths, embedding_path, tmp, options.subcontig_genes, options.min_subcontig_genes)
        else:
            log.info(f"pretrain: reusing the corpus store {path}")
    _barrier(world)
    return CorpusStore(path)


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def run_pretrain(element_paths, embedding_path, output, options: PretrainOptions = PretrainOptions(),
                 resume: bool = False, force: bool = False) -> dict:
    from glmkit.train import distributed

    if options.recipe not in ("glmkit", "reference"):
        raise GlmkitUsageError(f"--recipe {options.recipe}: expected glmkit or reference")
    _model_config(options)  # shapes the model cannot have are usage errors, before any work
    rank, world, device_spec = distributed(options.device)
    # one run per output folder: rank 0 holds its lock (existing folders are judged below: --resume/--force)
    claim = claim_outputs([output], force=True, inputs=[*element_paths, embedding_path]) if rank == 0 \
        else contextlib.nullcontext()
    with claim:
        out = Path(output)
        fresh = not resume  # a new run's folder holds nothing worth keeping until its first checkpoint
        try:
            return _pretrain(element_paths, embedding_path, out, options, resume, force, rank, world, device_spec)
        except BaseException:
            if fresh and rank == 0 and not (out / "checkpoint").exists():
                remove(out)
            raise


def _pretrain(element_paths, embedding_path, out: Path, options: PretrainOptions, resume: bool, force: bool,
              rank: int, world: int, device_spec: str) -> dict:

    from glmkit.glm_data import Normalization, choose_split, fit_normalization
    from glmkit.glm_task import GLMRecipe, GLMTask
    from glmkit.io.checkpoint import load_checkpoint
    from glmkit.models.device import resolve_device, resolve_precision, torch_threads
    from glmkit.models.glm import GLMConfig
    from glmkit.train import Trainer, plot_training_curves, read_log

    device = resolve_device(device_spec)
    amp = resolve_precision(options.precision, device)
    checkpoint = out / "checkpoint"
    # every process judges the folder as it was, before rank 0 changes anything
    occupied = out.exists() and any(p for p in out.iterdir() if p.name != "corpus.zarr")
    _barrier(world)
    if resume:
        if not (checkpoint / "config.json").exists():
            raise GlmkitError(f"{out}: nothing to resume (no checkpoint/ yet)")
    elif occupied:
        if not force:
            raise GlmkitError(f"{out}: output exists; use --resume to continue it or --force to start over")
        if rank == 0:
            for p in out.iterdir():  # the corpus store stays when it was built from the same inputs
                if p.name != "corpus.zarr":
                    remove(p)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    _barrier(world)

    with torch_threads(options.threads) if device.type == "cpu" else contextlib.nullcontext():
        meta = state = weights = None
        if resume:
            meta, weights, extras, state = load_checkpoint(checkpoint, ARCHITECTURE, training=True)
            check_resumable(meta, options, world, checkpoint)
            _check_same_inputs(meta, element_paths, embedding_path, options, checkpoint)
        corpus = _corpus(element_paths, embedding_path, out, options, rank, world)
        split, n_train, n_val = choose_split(corpus, options.val_fraction, options.seed)
        if not n_train:
            raise GlmkitError("no training sub-contigs left after holding out the validation contigs")
        if n_train < options.batch_size:  # a step would hold the same sub-contigs several times over
            raise GlmkitUsageError(f"--batch-size {options.batch_size}: the training split has only {n_train:,} "
                                   f"sub-contigs; use a batch of at most that many rows, or a larger corpus")
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
        log_rows = read_log(out / "log.tsv", int(state["step"])) if state is not None and rank == 0 else []
        trainer = Trainer(task, loop_options(options), out, rank, world, device, amp, state, weights, log_rows)
        log.info(f"pretrain: {n_train:,} training / {n_val:,} validation sub-contigs; gLM {cfg.num_layers} layers, "
                 f"hidden {cfg.hidden_size}, {cfg.num_heads} heads; {world} process(es) on {device}, "
                 f"{str(amp).removeprefix('torch.')}; recipe {options.recipe}"
                 + (f"; resuming at step {trainer.step}" if resume else ""))
        try:
            return trainer.train()
        finally:
            if rank == 0 and (out / "log.tsv").exists():
                plot_training_curves(out / "log.tsv", out / "curves.png", "val_pseudo_accuracy", "gLM")


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
    from glmkit.glm_data import corpus_parameters

    check_embedding_model(meta.get("embedding_model", {}), embedding_path, where)
    if meta.get("corpus") and meta["corpus"] != corpus_parameters(element_paths, embedding_path,
                                                                   options.subcontig_genes,
                                                                   options.min_subcontig_genes):
        raise GlmkitError(f"{where}: the element or embedding stores differ from those this checkpoint was trained "
                          f"on; resume with the same inputs")
