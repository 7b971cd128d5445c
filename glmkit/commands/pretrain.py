"""`glmkit pretrain`: train a model family (the gLM, gLM2; glmkit/models/registry.py) on element stores.

One process on CPU, one GPU, or many through `torchrun`. The corpus is first
turned into the family's corpus store (the gLM: genes with their embeddings in
corpus order, sub-contigs as arrays; gLM2: tokens in chunks), built once and
reused by every run on the same inputs; then the training loop
(glmkit/train.py) runs the family's task (glmkit/models/<family>/task.py).
Memory is bounded by the batch, the model and fixed caches, not by the corpus
(bench/scale.py shows it).

Everything random is a function of (seed, step, row): data order, masks, and
every process's generators saved with each checkpoint, so `--resume`
continues a killed run exactly.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import replace
from pathlib import Path

from glmkit.errors import GlmkitError, GlmkitUsageError
from glmkit.models.registry import family
from glmkit.io.files import claim_outputs, clear_work_folder, publish, remove, work_folder
from glmkit.options import PretrainOptions

log = logging.getLogger("glmkit")
PAPER_WARMUP = 5_000
# options that, changed on --resume, would train another model or draw other data: refused, naming the option
RESUME_MUST_MATCH = ("arch", "context", "batch_size", "accumulate", "seed", "preset", "num_layers", "hidden_size", "num_heads", "dropout",
                     "subcontig_genes", "min_subcontig_genes", "val_fraction", "mask_fraction", "recipe")


def warmup_steps(options: PretrainOptions) -> int:
    """--warmup-steps, or the paper's 5,000 capped at a tenth of the run (a short run would never warm up)."""
    if options.warmup_steps is not None:
        return options.warmup_steps
    return min(PAPER_WARMUP, max(1, options.max_steps // 10))


def resolved(o: PretrainOptions) -> PretrainOptions:
    """The options with the family's defaults filled in, checked: what a checkpoint records."""
    spec = family(o.arch)
    if o.preset not in spec.presets:
        raise GlmkitUsageError(f"--preset {o.preset} is not a {spec.architecture} preset: expected one of "
                               f"{', '.join(spec.presets)}")
    spec.part("task").check_options(o)
    return replace(o, **{k: spec.recipe[k] for k in ("mask_fraction", "lr", "weight_decay") if getattr(o, k) is None})


def loop_options(o: PretrainOptions):
    from glmkit.train import LoopOptions

    o = resolved(o)
    reference = o.recipe == "reference"
    defaults = family(o.arch).recipe
    return LoopOptions(max_steps=o.max_steps, max_minutes=o.max_minutes, batch_size=o.batch_size,
                       accumulate=o.accumulate, lr=o.lr, warmup_steps=warmup_steps(o),
                       schedule="constant" if reference else defaults["schedule"],
                       weight_decay=0.0 if reference else o.weight_decay, betas=defaults["betas"],
                       eps=1e-6 if reference else 1e-8, grad_clip=None if reference else o.grad_clip,
                       val_every=o.val_every, checkpoint_every=o.checkpoint_every, log_every=o.log_every,
                       seed=o.seed, device=o.device, precision=o.precision, threads=o.threads,
                       compile_model=o.compile_model, static_shapes=o.static_shapes)


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
            force: bool = False, final: Path | None = None, meta: dict | None = None):
    """The family's corpus store, built (rank 0, under its lock) unless one built from these very inputs is there
    (or, for a run replacing ``final``, in the old output). ``meta``: the checkpoint a resumed run continues, or
    the model an --init run starts from (gLM2 tokenises as it was trained)."""
    from glmkit.io.store import built_from, reuse_or_build

    spec = family(options.arch)
    corpus = spec.part("corpus")
    parameters = corpus.parameters(element_paths, embedding_path, options, meta)
    path = Path(options.corpus) if options.corpus else out / "corpus.zarr"
    if not options.corpus and final is not None and final != out and not path.exists() and \
            built_from(final / "corpus.zarr", corpus.SCHEMA, corpus.STORE, parameters):
        path = final / "corpus.zarr"   # read where it is; _replace moves it into the new output
    if rank == 0:   # the default location belongs to the output: rebuilt as the output's --force allows
        reuse_or_build(path, corpus.SCHEMA, corpus.STORE, parameters,
                       lambda tmp: corpus.build(element_paths, embedding_path, tmp, options, meta),
                       force=force or not options.corpus, inputs=_inputs(element_paths, embedding_path),
                       what=f"{spec.architecture} corpus store", kind="corpus store", option="--corpus")
    _barrier(world)
    return corpus.STORE(path)


def _inputs(element_paths, embedding_path) -> list:
    return [*element_paths, *([embedding_path] if embedding_path else [])]


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


ARCHITECTURE_OPTIONS = ("num_layers", "hidden_size", "num_heads")   # --init's model has its own


def check_init(init: str, options: PretrainOptions) -> None:
    """--init names a model of the --arch trained, and no option may give it another shape."""
    from glmkit.io.files import InputFile
    from glmkit.models.registry import family_of

    if not Path(init).is_dir():
        InputFile(init).check()
        raise GlmkitUsageError(f"--init {init}: expected a model folder (a glmkit model, an import-glm folder, or a "
                               f"published gLM2 folder)")
    found = family_of(init)
    if found.key != options.arch:
        raise GlmkitUsageError(f"--init {init} is a {found.architecture} model; --arch {options.arch} trains a "
                               f"{family(options.arch).architecture} (leave --arch out: --init sets it)")
    for key in ARCHITECTURE_OPTIONS:
        if getattr(options, key) is not None:
            raise GlmkitUsageError(f"--{key.replace('_', '-')}: the model's shape comes from --init {init}")


def init_record(loaded, init: str) -> dict:
    """Where a run's weights started: the model folder and the sha256 of its weights."""
    files = loaded.meta.get("files") or {}
    return {"path": str(Path(init).resolve()), "architecture": loaded.meta.get("architecture"),
            "sha256": files.get("model.safetensors") or files.get("weights")}


def run_pretrain(element_paths, embedding_path, output, options: PretrainOptions = PretrainOptions(),
                 resume: bool = False, force: bool = False, init: str | None = None) -> dict:
    """Train ``options.arch`` on the element stores (and, for the gLM, their embeddings) into ``output``.
    ``init``: a model folder to start from (fresh optimiser and schedule; its family is ``options.arch``)."""
    from glmkit.train import distributed

    if options.recipe not in ("glmkit", "reference"):
        raise GlmkitUsageError(f"--recipe {options.recipe}: expected glmkit or reference")
    if init:
        check_init(init, options)
    options = resolved(options)
    spec = family(options.arch)
    if spec.reads_embeddings and not embedding_path:
        raise GlmkitUsageError(f"--embeddings is required for the {spec.architecture} (--arch {spec.key}): it "
                               f"reads ESM2 embeddings")
    if not spec.reads_embeddings and embedding_path:
        raise GlmkitUsageError(f"--embeddings is for the gLM: {spec.architecture} (--arch {spec.key}) reads the "
                               f"element stores' sequences")
    if not init:
        spec.part("task").model_config(options)  # shapes the model cannot have are usage errors, before any work
    from glmkit.io.store import require_distinct

    require_distinct(element_paths)
    rank, world, device_spec = distributed(options.device)
    # one run per output folder: rank 0 holds its lock (existing folders are judged below: --resume/--force)
    claim = claim_outputs([output], force=True, inputs=[*_inputs(element_paths, embedding_path),
                                                        *([init] if init else [])]) if rank == 0 \
        else contextlib.nullcontext()
    with claim:
        out = Path(output)
        run, created = _run_folder(out, resume, force, rank, world)
        try:
            result = _pretrain(element_paths, embedding_path, run, out, options, resume, force, rank, world,
                               device_spec, init)
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
              force: bool, rank: int, world: int, device_spec: str, init: str | None = None) -> dict:
    """Train in ``out`` (the output, or its work folder while it replaces ``final``)."""
    from glmkit.data.split import choose_split
    from glmkit.io.checkpoint import load_checkpoint
    from glmkit.models.device import resolve_device, resolve_precision, torch_threads
    from glmkit.train import Trainer, log_columns, plot_training_curves, read_log

    device = resolve_device(device_spec)
    amp = resolve_precision(options.precision, device)
    checkpoint = out / "checkpoint"

    with torch_threads(options.threads) if device.type == "cpu" else contextlib.nullcontext():
        meta = state = weights = extras = loaded = None
        spec = family(options.arch)
        architecture, items = spec.architecture, spec.item_name
        if resume:
            meta, weights, extras, state = load_checkpoint(checkpoint, architecture, training=True,
                                                           extras=spec.checkpoint_extras)
            check_resumable(meta, options, world, checkpoint)
            spec.part("corpus").check_resume_inputs(meta, element_paths, embedding_path, options, checkpoint)
        if init:
            loaded = spec.part("weights").load(init)
            started = init_record(loaded, init)
            if resume and (meta.get("init") or {}).get("sha256") != started["sha256"]:
                raise GlmkitUsageError(f"--init {init}: {checkpoint} did not start from this model "
                                       f"({(meta.get('init') or {}).get('path') or 'it started from random weights'})")
            if spec.reads_embeddings:   # its normalisation and PCA are of one ESM2 model and layer
                from glmkit.io.embeddings import require_same_model

                require_same_model(loaded.meta.get("embedding_model") or {}, embedding_path, Path(init))
        corpus = _corpus(element_paths, embedding_path, out, options, rank, world, force, final,
                         meta if meta is not None else loaded.meta if loaded is not None else None)
        split, n_train, n_val = choose_split(corpus, options.val_fraction, options.seed, spec.items)
        if not n_train:
            raise GlmkitError(f"no training {items} left after holding out the validation contigs")
        if n_train < options.batch_size:  # a step would hold the same items several times over
            raise GlmkitUsageError(f"--batch-size {options.batch_size}: the training split has only {n_train:,} "
                                   f"{items}; use a batch of at most that many rows, or a larger corpus")
        task, described = spec.part("task").make_task(corpus, split, options, meta, extras, checkpoint,
                                                      embedding_path, rank, world, loaded if not resume else None)
        if (meta or {}).get("init") or loaded is not None:   # where the weights started, in every checkpoint
            task.info["init"] = meta["init"] if resume else started
        log_rows = read_log(out / "log.tsv", int(state["step"]), log_columns(task)) \
            if state is not None and rank == 0 else []
        trainer = Trainer(task, loop_options(options), out, rank, world, device, amp, state, weights, log_rows,
                          loaded.model.state_dict() if loaded is not None and not resume else None, init)
        log.info(f"pretrain: {n_train:,} training / {n_val:,} validation {items}; {described}; {world} process(es) "
                 f"on {device}, {str(amp).removeprefix('torch.')}"
                 + (f"; resuming at step {trainer.step}" if resume else f"; from {init}" if init else ""))
        try:
            return trainer.train()
        finally:
            if rank == 0 and (out / "log.tsv").exists():
                plot_training_curves(out / "log.tsv", out / "curves.png", task.curves, architecture)
