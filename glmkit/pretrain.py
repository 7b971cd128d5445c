"""`glmkit pretrain`: train the gLM on element and embedding stores.

One process on CPU, one GPU, or many through `torchrun` (DistributedDataParallel;
NCCL on GPUs, gloo on CPU). Per step each process takes its share of a batch
of packed sub-contigs, masks 15 % of each sub-contig's genes (at least one) to
-1, and minimises MSE(closest of 4 predictions, label) + 1e-4 x CE(likelihoods,
index of the closest). AdamW with linear warm-up then linear decay, gradient
clipping before the optimiser step, bf16/fp16 autocast on CUDA.

Everything random is a function of (seed, step): data order, masks, and the
dropout RNG state saved with each checkpoint, so `--resume` continues a killed
run exactly where its last checkpoint stood.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from glmkit.errors import GlmkitError, GlmkitUsageError
from glmkit.glm_data import Normalization, load_corpus, make_batch, pack, split_by_contig
from glmkit.io.checkpoint import load_checkpoint, load_weights, save_checkpoint
from glmkit.io.files import claim_outputs, remove
from glmkit import stop
from glmkit.log import progress

log = logging.getLogger("glmkit")
ARCHITECTURE = "gLM"
LOG_COLUMNS = ("step", "epoch", "lr", "train_loss", "val_loss", "val_pseudo_accuracy", "genes_per_s")


@dataclass
class PretrainOptions:
    preset: str = "small"
    num_layers: int | None = None
    hidden_size: int | None = None
    num_heads: int | None = None
    dropout: float | None = None    # None: the preset's
    max_steps: int = 10_000
    batch_size: int = 32            # rows of packed sub-contigs per step, over all processes
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
    device: str = "auto"
    precision: str = "auto"
    threads: int = 1


PAPER_WARMUP = 5_000


def warmup_steps(options: PretrainOptions) -> int:
    """--warmup-steps, or the paper's 5,000 capped at a tenth of the run (a short run would never warm up)."""
    if options.warmup_steps is not None:
        return options.warmup_steps
    return min(PAPER_WARMUP, max(1, options.max_steps // 10))


def masks_for(segments: np.ndarray, fraction: float, seed: int, step: int, stream: int) -> np.ndarray:
    """(B, L) bool: ``fraction`` of each sub-contig's genes (at least one), drawn from (seed, step, stream)."""
    rng = np.random.default_rng([seed, step, stream])
    scores = rng.random(segments.shape)
    masked = np.zeros(segments.shape, dtype=bool)
    for b in range(segments.shape[0]):
        for seg in np.unique(segments[b][segments[b] > 0]):
            pos = np.flatnonzero(segments[b] == seg)
            k = max(1, int(round(fraction * len(pos))))
            masked[b, pos[np.argsort(scores[b, pos])[:k]]] = True
    return masked


def pseudo_accuracy(closest, labels, segment_of, all_labels_by_segment) -> tuple[int, int]:
    """Masked genes whose closest prediction lies nearer its own label than any other gene's label in the
    sub-contig (Hwang et al.'s pseudo-accuracy). Inputs are numpy: closest (N, D), labels (N, D)."""
    correct = 0
    for j in range(len(closest)):
        others = all_labels_by_segment[segment_of[j]]                     # (n, D), own label included
        d = ((others - closest[j]) ** 2).sum(1)
        own = ((labels[j] - closest[j]) ** 2).sum()
        correct += bool(own <= d.min())
    return correct, len(closest)


class Trainer:
    def __init__(self, element_paths, embedding_path, output: str, options: PretrainOptions, resume: bool,
                 force: bool):
        import torch
        import torch.distributed as dist

        from glmkit.models.device import resolve_device, resolve_precision
        from glmkit.models.glm import GLM, preset

        self.torch, self.o, self.out = torch, options, Path(output)
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        if self.world > 1 and not dist.is_initialized():
            local = int(os.environ.get("LOCAL_RANK", "0"))
            if options.device in ("auto", "cuda") and torch.cuda.is_available():
                torch.cuda.set_device(local)
                options.device = f"cuda:{local}"
            dist.init_process_group("nccl" if options.device.startswith("cuda") else "gloo")
        self.device = resolve_device(options.device)
        self.amp = resolve_precision(options.precision, self.device)
        if self.device.type == "cpu":
            torch.set_num_threads(max(1, options.threads))
        if options.batch_size % self.world:
            raise GlmkitUsageError(f"--batch-size {options.batch_size} must be a multiple of the {self.world} processes")

        checkpoint = self.out / "checkpoint"
        if resume:
            if not checkpoint.exists():
                raise GlmkitError(f"{self.out}: nothing to resume (no checkpoint/ yet)")
        elif self.out.exists() and any(self.out.iterdir()):
            if not force:
                raise GlmkitError(f"{self.out}: output exists; use --resume to continue it or --force to start over")
            if self.rank == 0:
                remove(self.out)

        self.corpus = load_corpus(element_paths, embedding_path, options.subcontig_genes, options.min_subcontig_genes)
        train, val = split_by_contig(self.corpus.subcontigs, options.val_fraction, options.seed)
        if not train:
            raise GlmkitError("no training sub-contigs left after holding out the validation contigs")
        meta = state = None
        if resume:
            meta, weights, norm_arrays, state = load_checkpoint(checkpoint, ARCHITECTURE, training=True)
            self._check_embeddings(meta, checkpoint)
            self.norm = Normalization(**{k: v.numpy() for k, v in norm_arrays.items()})
            from glmkit.models.glm import GLMConfig

            self.cfg = GLMConfig.from_dict(meta.get("config"), checkpoint / "config.json")
        else:
            train_rows = np.unique(np.concatenate([self.corpus.subcontigs[i].rows for i in train]))
            self.norm = Normalization.fit(self.corpus.embeddings[train_rows])
            dim = self.corpus.embeddings.shape[1]
            self.cfg = preset(options.preset, num_layers=options.num_layers, hidden_size=options.hidden_size,
                              num_heads=options.num_heads, dropout=options.dropout, input_dim=dim + 1,
                              label_dim=self.norm.label_components.shape[1] + 1,
                              max_position_embeddings=max(512, options.subcontig_genes))
        self.standardized = self.norm.standardize(self.corpus.embeddings)
        self.labels = self.norm.labels(self.standardized)
        lengths = [len(sc.rows) for sc in self.corpus.subcontigs]
        cap = options.subcontig_genes
        self.train_rows = [[train[i] for i in row] for row in pack([lengths[i] for i in train], cap)]
        self.val_rows = [[val[i] for i in row] for row in pack([lengths[i] for i in val], cap)]

        torch.manual_seed(options.seed)
        self.model = GLM(self.cfg).to(self.device)
        fused = self.device.type == "cuda"
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=options.lr, weight_decay=options.weight_decay,
                                           fused=fused, foreach=None if fused else True)
        warm = max(1, warmup_steps(options))
        total = max(options.max_steps, warm + 1)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm))))
        self.step = 0
        self.last_val = (math.nan, math.nan)  # the latest validation (loss, pseudo-accuracy); nan before the first
        if state is not None:
            load_weights(self.model, weights, checkpoint / "model.safetensors")
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["rng"])
            self.step = int(state["step"])
            self.last_val = tuple(state.get("last_val", (math.nan, math.nan)))
        self.ddp = self.model
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.ddp = DistributedDataParallel(self.model, device_ids=[self.device.index] if fused else None)
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            self._log_rows = self._read_log() if resume else []
        log.info(f"pretrain: {len(train):,} training / {len(val):,} validation sub-contigs "
                 f"({len(self.train_rows):,} / {len(self.val_rows):,} packed rows); gLM {self.cfg.num_layers} layers, "
                 f"hidden {self.cfg.hidden_size}, {self.cfg.num_heads} heads; {self.world} process(es) on {self.device}"
                 + (f"; resuming at step {self.step}" if resume else ""))

    def _check_embeddings(self, meta: dict, where: Path) -> None:
        theirs = meta.get("embedding_model", {})
        ours = self.corpus.model
        for key in ("name", "sha256", "embed_dim", "layer"):
            if theirs.get(key) != ours.get(key):
                raise GlmkitError(f"{where}: trained on embeddings from {theirs.get('name')} "
                                  f"({key} {theirs.get(key)}), but the embedding store has {ours.get('name')} "
                                  f"({key} {ours.get(key)})")

    # -- data ----------------------------------------------------------------------------------------------

    def _batch(self, rows: list[list[int]], step: int, stream: int):
        torch = self.torch
        features, labels, segments = make_batch(self.corpus, rows, self.standardized, self.labels,
                                                self.o.subcontig_genes)
        masked = masks_for(segments, self.o.mask_fraction, self.o.seed, step, stream)
        features[masked] = -1.0
        t = lambda a: torch.from_numpy(a).to(self.device, non_blocking=True)  # noqa: E731
        return t(features), t(labels), t(segments), t(masked)

    def _rows_for(self, step: int) -> list[list[int]]:
        """This process's rows for a step: a seeded permutation per epoch, sliced by rank."""
        per_step = self.o.batch_size
        n = len(self.train_rows)
        epoch, offset = divmod(step * per_step, n)
        order = np.random.default_rng([self.o.seed, epoch]).permutation(n)
        take = [order[(offset + k) % n] for k in range(per_step)]
        return [self.train_rows[i] for i in take[self.rank::self.world]]

    # -- loop ----------------------------------------------------------------------------------------------

    def _forward_loss(self, features, labels, segments, masked):
        from glmkit.models.glm import glm_loss

        torch = self.torch
        with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp != torch.float32):
            _, predictions, logits, _ = self.ddp(features, segments)
        return glm_loss(predictions.float(), logits.float(), labels, masked)

    def validate(self) -> tuple[float, float]:
        torch = self.torch
        self.model.eval()
        total_loss, correct, count = 0.0, 0, 0
        with torch.no_grad():
            for k in range(0, len(self.val_rows), self.o.batch_size):
                rows = self.val_rows[k:k + self.o.batch_size]
                features, labels, segments, masked = self._batch(rows, 0, 10**6 + k)  # fixed masks
                loss, closest = self._forward_loss(features, labels, segments, masked)
                total_loss += loss.item() * int(masked.sum())
                lab = labels.cpu().numpy()
                seg = segments.cpu().numpy()
                m = masked.cpu().numpy()
                where = np.argwhere(m)
                by_segment = {(b, s): lab[b][seg[b] == s] for b, s in {(b, seg[b, l]) for b, l in where}}
                c, n = pseudo_accuracy(closest.float().cpu().numpy(), lab[m], [(b, seg[b, l]) for b, l in where],
                                       by_segment)
                correct, count = correct + c, count + n
        self.model.train()
        return (total_loss / count, correct / count) if count else (math.nan, math.nan)

    def save(self) -> None:
        torch = self.torch
        save_checkpoint(self.out / "checkpoint", ARCHITECTURE, self.cfg.to_dict(), self.model.state_dict(),
                        {k: torch.from_numpy(v) for k, v in self.norm.arrays().items()},
                        {"embedding_model": self.corpus.model, "step": self.step, "options": asdict(self.o)},
                        {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                         "rng": torch.get_rng_state(), "step": self.step, "last_val": list(self.last_val)})

    def train(self) -> dict:
        torch = self.torch
        o = self.o
        self.model.train()
        started = time.perf_counter()
        genes, window_start = 0, time.perf_counter()
        last_good = self.step
        running = []
        with progress(total=o.max_steps, initial=self.step, desc="pretrain", unit="steps",
                      enabled=self.rank == 0) as bar, stop.deferred():
            while self.step < o.max_steps:
                if o.max_minutes is not None and time.perf_counter() - started > 60 * o.max_minutes:
                    log.info(f"pretrain: --max-minutes {o.max_minutes} reached at step {self.step}")
                    break
                if stop.requested():  # between steps: checkpoint this step, then stop
                    if not self.step:
                        raise stop.Stopped(stop.requested(), "stopped before the first step; nothing was kept")
                    if self.rank == 0 and last_good != self.step:
                        self.save()
                    raise stop.Stopped(stop.requested(), f"checkpoint at step {self.step} saved in "
                                       f"{self.out / 'checkpoint'}: add --resume to the same command to continue")
                features, labels, segments, masked = self._batch(self._rows_for(self.step), self.step, self.rank)
                loss, _ = self._forward_loss(features, labels, segments, masked)
                if not torch.isfinite(loss):
                    raise GlmkitError(f"loss became {loss.item()} at step {self.step}; the last good checkpoint "
                                      f"(step {last_good}) is in {self.out / 'checkpoint'}; lower --lr or check inputs")
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), o.grad_clip)  # before the optimiser step
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.step += 1
                bar.update(1)
                running.append(loss.item())
                genes += int((segments > 0).sum()) * self.world
                if self.step % o.val_every == 0 or self.step == o.max_steps:
                    self.last_val = self.validate() if self.val_rows else (math.nan, math.nan)
                if self.step % o.log_every == 0 or self.step == o.max_steps:
                    elapsed = time.perf_counter() - window_start
                    self._log(self.step, float(np.mean(running)), self.last_val, genes / elapsed)
                    running, genes, window_start = [], 0, time.perf_counter()
                if self.step % o.checkpoint_every == 0 or self.step == o.max_steps:
                    if self.rank == 0:
                        self.save()
                    last_good = self.step
        if self.rank == 0 and last_good != self.step:
            self.save()
        if self.world > 1:
            torch.distributed.barrier()
        return {"step": self.step, "val_loss": self.last_val[0], "val_pseudo_accuracy": self.last_val[1],
                "minutes": (time.perf_counter() - started) / 60}

    # -- logging -------------------------------------------------------------------------------------------

    def _read_log(self) -> list[list[str]]:
        path = self.out / "log.tsv"
        if not path.exists():
            return []
        rows = [line.split("\t") for line in path.read_text().splitlines()[1:]]
        return [r for r in rows if int(r[0]) <= self.step]  # drop what came after the checkpoint

    def _log(self, step, train_loss, val, genes_per_s) -> None:
        if self.rank != 0:
            return
        from glmkit.io.tsv import format_value

        epoch = step * self.o.batch_size / max(1, len(self.train_rows))
        validated = not math.isnan(val[0])  # no validation yet: empty cells, not a 'nan' that reads as divergence
        row = [step, round(epoch, 4), self.scheduler.get_last_lr()[0], train_loss, *(val if validated else (None, None)),
               round(genes_per_s, 1)]
        self._log_rows.append([format_value(v) for v in row])
        text = "\t".join(LOG_COLUMNS) + "\n" + "".join("\t".join(r) + "\n" for r in self._log_rows)
        tmp = self.out / ".log.tsv.partial"
        tmp.write_text(text)
        os.replace(tmp, self.out / "log.tsv")
        validation = f", val loss {val[0]:.4f}, val pseudo-accuracy {val[1]:.3f}" if validated else ""
        log.info(f"pretrain: step {step}: loss {train_loss:.4f}{validation}, {genes_per_s:,.0f} genes/s")

    def plot(self) -> None:
        if self.rank != 0 or not self._log_rows:
            return
        plot_training_curves(self.out / "log.tsv", self.out / "curves.png")


def plot_training_curves(log_path: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [line.split("\t") for line in Path(log_path).read_text().splitlines()]
    col = {name: [float(r[i]) if r[i] else math.nan for r in rows[1:]] for i, name in enumerate(rows[0])}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(col["step"], col["train_loss"], label="train")
    ax1.plot(col["step"], col["val_loss"], label="validation")
    ax1.set(xlabel="step", ylabel="loss", title="gLM loss")
    ax1.legend()
    ax2.plot(col["step"], col["val_pseudo_accuracy"], color="C2")
    ax2.set(xlabel="step", ylabel="pseudo-accuracy", title="validation pseudo-accuracy", ylim=(0, 1))
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def run_pretrain(element_paths, embedding_path, output, options: PretrainOptions = PretrainOptions(),
                 resume: bool = False, force: bool = False) -> dict:
    from glmkit.models.glm import preset

    preset(options.preset, num_layers=options.num_layers, hidden_size=options.hidden_size,
           num_heads=options.num_heads, dropout=options.dropout)  # bad shapes are usage errors, before any work
    # one run per output folder: rank 0 holds its lock (existing folders are judged by Trainer: --resume/--force)
    claim = (claim_outputs([output], force=True, inputs=[*element_paths, embedding_path])
             if os.environ.get("RANK", "0") == "0" else contextlib.nullcontext())
    with claim:
        fresh = not resume  # a new run's folder holds nothing worth keeping until its first checkpoint
        try:
            trainer = Trainer(element_paths, embedding_path, output, options, resume, force)
            try:
                result = trainer.train()
            finally:
                trainer.plot()
        except BaseException:
            if fresh and os.environ.get("RANK", "0") == "0" and not (Path(output) / "checkpoint").exists():
                remove(Path(output))
            raise
    return result
