"""The one training loop: every model glmkit trains (the gLM, gLM2) is a task inside it.

The loop owns what is the same for every model: processes (one CPU, one GPU,
or many through `torchrun`: DistributedDataParallel, NCCL on GPUs, gloo on
CPU), precision (bf16 autocast on CPU or GPU, fp16 with a gradient scaler),
gradient accumulation (no gradient sync on the inner micro-steps), AdamW with
weight decay on matrices only, the learning-rate schedule, gradient clipping
before the step, checkpoints (atomic, with every process's random generators
and the data stream's position), exact resume, validation shared out by rank
and reduced, logging on rank 0, and stops that every process takes together
(a stop signal, `--max-minutes`, a loss that is not finite).

A task owns its model, its data, its loss and its metrics:

    architecture, unit               e.g. "gLM", "genes": what a checkpoint is, what throughput counts
    metrics                          names of validation metrics besides val_loss (log columns)
    build_model() -> nn.Module
    checkpoint() -> (config, extra tensor files, info)   what a checkpoint records besides the weights
    train_steps(state, rank, world, rows, accumulate)    generator of (micro-batches, state after, units)
    validation(rank, world, rows)                        generator of micro-batches
    loss(model, batch) -> (loss_sum, count)              the step's loss is the sum over every process and
                                                         micro-batch divided by the global count
    evaluate(model, batch) -> dict of sums               reduced over processes, then summarize(sums)
    summarize(sums) -> {"val_loss": ..., metric: ...}

A micro-batch is a dict of numpy arrays plus "count" (an int: the loss's
denominator contribution, e.g. masked genes), produced in a background thread.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from glmkit import stop
from glmkit.data.stream import Prefetcher
from glmkit.errors import GlmkitError, GlmkitUsageError
from glmkit.io.checkpoint import save_checkpoint
from glmkit.io.tsv import format_value
from glmkit.log import progress

log = logging.getLogger("glmkit")


@dataclass
class LoopOptions:
    max_steps: int = 10_000
    max_minutes: float | None = None
    batch_size: int = 32             # rows per optimiser step, over all processes and micro-steps
    accumulate: int = 1              # micro-steps per optimiser step
    lr: float = 1e-4
    warmup_steps: int = 1
    schedule: str = "linear"         # after warm-up: "linear" to 0, "constant", "cosine" to 10 % at max_steps
    weight_decay: float = 0.01       # on matrices only (not on norms, biases or vectors)
    betas: tuple = (0.9, 0.999)
    eps: float = 1e-8
    grad_clip: float | None = 1.0    # global norm, before the optimiser step; None: no clipping
    val_every: int = 500
    checkpoint_every: int = 1_000
    log_every: int = 50
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    threads: int = 1
    compile_model: bool = False      # torch.compile the training forward (validation and checkpoints: the model)
    static_shapes: bool = False      # the task's batches have one shape (compiled without dynamic shapes; CUDA graphs)


# -- processes --------------------------------------------------------------------------------------------------

def distributed(device_spec: str) -> tuple[int, int, str]:
    """(rank, world size, device) of this process; under torchrun, joins the process group (once)."""
    from glmkit.resources import launcher_int

    world, rank = launcher_int("WORLD_SIZE", 1), launcher_int("RANK", 0)
    if world > 1:
        import torch.distributed as dist

        missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(v)]
        if missing and not dist.is_initialized():
            raise GlmkitUsageError(f"WORLD_SIZE={world} in the environment but no {missing[0]}: several processes "
                                   f"are started by torchrun (torchrun --nproc-per-node {world} "
                                   f"$(which glmkit) pretrain ...); unset WORLD_SIZE for one process")
        if rank >= world:
            raise GlmkitUsageError(f"RANK={rank} in the environment is not below WORLD_SIZE={world}")
        local = launcher_int("LOCAL_RANK", 0)
        if device_spec in ("auto", "cuda") and torch.cuda.is_available():
            torch.cuda.set_device(local)
            device_spec = f"cuda:{local}"
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device_spec.startswith("cuda") else "gloo")
    return rank, world, device_spec


def _all_reduce(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return tensor


def _gather(value, rank: int, world: int) -> list:
    """``value`` of every process, on rank 0 (a list; None elsewhere)."""
    if world == 1:
        return [value]
    import torch.distributed as dist

    out = [None] * world if rank == 0 else None
    dist.gather_object(value, out, dst=0)
    return out


def shared(compute, rank: int, world: int):
    """``compute()`` on rank 0, handed to every process (one read of a store, not one per process)."""
    if world == 1:
        return compute()
    import torch.distributed as dist

    box = [compute() if rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _rng_state(device: torch.device) -> dict:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def schedule(options: LoopOptions):
    """lr multiplier by step: linear warm-up, then the chosen decay."""
    warm, total = max(1, options.warmup_steps), max(options.max_steps, options.warmup_steps + 1)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress_ = min(1.0, (step - warm) / max(1, total - warm))
        if options.schedule == "constant":
            return 1.0
        if options.schedule == "cosine":
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress_))
        return max(0.0, 1.0 - progress_)
    return factor


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices (linear weights, embedding tables), not on norms, biases or vectors (nanoGPT)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    rest = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


# -- the loop ---------------------------------------------------------------------------------------------------

class Trainer:
    def __init__(self, task, options: LoopOptions, out: Path, rank: int, world: int, device: torch.device,
                 amp: torch.dtype, resume_state: dict | None = None, resume_weights: dict | None = None,
                 log_rows: list[list[str]] | None = None, init_weights: dict | None = None, init_path=None):
        from glmkit.io.checkpoint import load_weights

        self.task, self.o, self.out = task, options, Path(out)
        self.rank, self.world, self.device, self.amp = rank, world, device, amp
        if options.batch_size % (world * options.accumulate):
            raise GlmkitUsageError(f"--batch-size {options.batch_size} must be a multiple of the {world} process(es) "
                                   f"x --accumulate {options.accumulate}")
        torch.manual_seed(options.seed)  # the same initial weights on every process
        self.model = task.build_model()
        if resume_state is None and init_weights is not None:   # pretrain --init: a fresh run from these weights
            load_weights(self.model, init_weights, init_path)
        self.model = self.model.to(device)
        torch.manual_seed(options.seed * 1_000_003 + rank + 1)  # dropout: its own stream per process
        # fused AdamW: one kernel over all parameters (CPU too: 58 -> 16 ms a step for the small gLM)
        self.optimizer = torch.optim.AdamW(parameter_groups(self.model, options.weight_decay), lr=options.lr,
                                           betas=tuple(options.betas), eps=options.eps, fused=True)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule(options))
        self.scaler = torch.amp.GradScaler(device.type) if amp == torch.float16 else None
        self.step, self.last_val, self.stream_state = 0, {}, None
        self.log_rows = log_rows or []   # a resumed run's kept rows, until log.tsv is published (then None)
        if resume_state is not None:
            load_weights(self.model, resume_weights, self.out / "checkpoint" / "model.safetensors")
            self.optimizer.load_state_dict(resume_state["optimizer"])
            self.scheduler.load_state_dict(resume_state["scheduler"])
            if self.scaler is not None and resume_state.get("scaler"):
                self.scaler.load_state_dict(resume_state["scaler"])
            _set_rng_state(resume_state["rng"][rank], device)
            self.step = int(resume_state["step"])
            self.last_val = dict(resume_state.get("last_val") or {})
            self.stream_state = resume_state["stream"]
        self.ddp = self.model
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.ddp = DistributedDataParallel(self.model, device_ids=[device.index] if device.type == "cuda" else None)
        # --static-shapes on one GPU: the compiled step is captured as a CUDA graph and replayed (one launch for
        # the forward, one for the backward); multi-process runs keep the default mode (DDP's buckets sync)
        self.cuda_graphs = options.compile_model and options.static_shapes and device.type == "cuda" and world == 1
        if options.compile_model:  # without --static-shapes, shapes vary (genes per row, masked genes): dynamic
            self.ddp = torch.compile(self.ddp, dynamic=not options.static_shapes,
                                     mode="reduce-overhead" if self.cuda_graphs else None)

    # -- pieces -----------------------------------------------------------------------------------------------

    def _tensors(self, batch: dict) -> dict:
        return {k: (torch.from_numpy(v).to(self.device, non_blocking=True) if isinstance(v, np.ndarray) else v)
                for k, v in batch.items()}

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp != torch.float32)

    def validate(self) -> dict:
        task, names = self.task, None
        self.model.eval()
        sums: dict[str, float] = {}
        with torch.no_grad():
            for batch in task.validation(self.rank, self.world, self.o.batch_size // (self.world * self.o.accumulate)):
                with self._autocast():
                    found = task.evaluate(self.model, self._tensors(batch))
                for k, v in found.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
        self.model.train()
        names = sorted(task.validation_sums)
        reduced = _all_reduce(torch.tensor([sums.get(k, 0.0) for k in names], dtype=torch.float64,
                                           device=self.device))
        return task.summarize(dict(zip(names, reduced.tolist())))

    def save(self, stream_state) -> None:
        rng = _gather(_rng_state(self.device), self.rank, self.world)
        if self.rank != 0:
            return
        config, extra_files, info = self.task.checkpoint()
        training_state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                          "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                          "rng": rng, "step": self.step, "last_val": self.last_val, "stream": stream_state}
        save_checkpoint(self.out / "checkpoint", self.task.architecture, config, self.model.state_dict(),
                        extra_files, {**info, "step": self.step, "world_size": self.world}, training_state)

    def _flags(self, bad: torch.Tensor, started: float) -> tuple[bool, bool, bool]:
        """(stop signal, time up, loss not finite) on any process: every process takes the same decision."""
        time_up = self.rank == 0 and self.o.max_minutes is not None and \
            time.perf_counter() - started > 60 * self.o.max_minutes
        flags = torch.stack([torch.tensor(float(stop.requested() is not None), device=self.device),
                             torch.tensor(float(time_up), device=self.device), bad.float().max()])
        flags = _all_reduce(flags, "max").tolist()
        return bool(flags[0]), bool(flags[1]), bool(flags[2])

    def _optimizer_step(self, micro: list[dict], loss_sum: torch.Tensor, bad: torch.Tensor) -> torch.Tensor:
        """One optimiser step over a step's micro-batches (no gradient sync but on the last); the step's loss sums
        added to ``loss_sum`` and its non-finite ones flagged in ``bad``, both in place, with no host sync.
        Returns the step's global count (the loss's denominator)."""
        count = _all_reduce(torch.tensor(float(sum(b["count"] for b in micro)), dtype=torch.float64,
                                         device=self.device))
        for k, batch in enumerate(micro):
            inner = k < len(micro) - 1 and self.world > 1
            with (self.ddp.no_sync() if inner else contextlib.nullcontext()):
                if self.cuda_graphs:  # the last replay's outputs are consumed: its memory may be reused
                    torch.compiler.cudagraph_mark_step_begin()
                with self._autocast():
                    part, _ = self.task.loss(self.ddp, self._tensors(batch))
                part = part.double()
                loss = (part * self.world / count.clamp(min=1)).float()
                (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            loss_sum += part.detach()
            bad |= ~torch.isfinite(part.detach())
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.o.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.o.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return count

    def _diverged(self, last_good: int) -> GlmkitError:
        return GlmkitError(f"loss became NaN or infinite before step {self.step}; the last good checkpoint (step "
                           f"{last_good}) is in {self.out / 'checkpoint'}; lower --lr or check the inputs")

    # -- the loop ---------------------------------------------------------------------------------------------

    def train(self) -> dict:
        o, task = self.o, self.task
        self.model.train()
        started = time.perf_counter()
        sync_every = 10 if self.device.type == "cuda" else 1  # host syncs: every step on CPU, every 10 on GPU
        rows_per_rank = o.batch_size // self.world
        stream = task.train_steps(self.stream_state, self.rank, self.world, rows_per_rank, o.accumulate, self.step)
        prefetch = Prefetcher(stream)
        bad = torch.zeros((), dtype=torch.bool, device=self.device)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        loss_count = torch.zeros((), dtype=torch.float64, device=self.device)
        units, window_start, waited_before = 0, time.perf_counter(), 0.0
        last_good, state_after, fraction = self.step, self.stream_state, 0.0
        validated_at = logged_at = first_step = self.step

        def log_window() -> None:  # one log row for the steps since the last (a collective: every process calls it)
            nonlocal units, window_start, waited_before, logged_at
            totals = _all_reduce(torch.stack([loss_sum, torch.tensor(float(units), dtype=torch.float64,
                                                                     device=self.device)])).tolist()
            elapsed = time.perf_counter() - window_start
            waited = prefetch.waited - waited_before
            self._log(fraction, totals[0] / max(1.0, float(loss_count)), time.perf_counter() - started,
                      totals[1] / elapsed, waited / elapsed)
            loss_sum.zero_(), loss_count.zero_()
            units, window_start, waited_before, logged_at = 0, time.perf_counter(), prefetch.waited, self.step

        try:
            with progress(total=o.max_steps, initial=self.step, desc="pretrain",
                          unit="steps", enabled=self.rank == 0) as bar, stop.deferred():
                while self.step < o.max_steps:
                    if self.step % sync_every == 0:
                        signalled, time_up, not_finite = self._flags(bad, started)
                        time_up = time_up and self.step > first_step   # one step at least: a checkpoint to keep
                        if not_finite:
                            raise self._diverged(last_good)
                        if time_up and self.step:  # the run ends here: its last row validated and logged
                            if validated_at != self.step:
                                self.last_val, validated_at = self.validate(), self.step
                            if logged_at != self.step:
                                log_window()
                        if signalled or time_up:
                            if self.step != last_good:
                                self.save(state_after)
                                last_good = self.step
                            if time_up:
                                log.info(f"pretrain: --max-minutes {o.max_minutes} reached at step {self.step}")
                                break
                            raise stop.Stopped(stop.requested() or signal.SIGTERM,
                                               f"checkpoint at step {self.step} saved in {self.out / 'checkpoint'}: "
                                               f"add --resume to the same command to continue" if self.step else
                                               "stopped before the first step; nothing was kept")
                    micro, state_after, fraction, step_units = prefetch.get()
                    loss_count += self._optimizer_step(micro, loss_sum, bad)  # the global count
                    self.step += 1
                    units += step_units
                    bar.update(1)
                    last = self.step == o.max_steps
                    if self.step % o.val_every == 0 or last:
                        self.last_val, validated_at = self.validate(), self.step
                    if self.step % o.log_every == 0 or last:
                        log_window()
                    if self.step % o.checkpoint_every == 0 or last:
                        if self._flags(bad, started)[2]:
                            raise self._diverged(last_good)
                        self.save(state_after)
                        last_good = self.step
            if last_good != self.step:
                self.save(state_after)
        finally:
            prefetch.close()
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()
        return {"step": self.step, **self.last_val, "minutes": (time.perf_counter() - started) / 60}

    # -- logging ------------------------------------------------------------------------------------------------

    def log_columns(self) -> tuple[str, ...]:
        return log_columns(self.task)

    def _log(self, epoch: float, train_loss: float, seconds: float, per_s: float, wait_fraction: float) -> None:
        if self.rank != 0:
            return
        val = [self.last_val.get(k) for k in ("val_loss", *self.task.metrics)]  # empty before the first validation
        row = [self.step, round(epoch, 4), self.scheduler.get_last_lr()[0], train_loss, *val, round(seconds, 3),
               round(per_s, 1), round(wait_fraction, 4)]
        line = "\t".join(format_value(v) for v in row) + "\n"
        if self.log_rows is None:  # one line appended: a kill may leave it partial, which read_log drops
            with open(self.out / "log.tsv", "a") as f:
                f.write(line)
        else:  # the header and a resumed run's kept rows, published whole once
            tmp = self.out / ".log.tsv.partial"
            tmp.write_text("\t".join(self.log_columns()) + "\n" + "".join("\t".join(r) + "\n" for r in self.log_rows)
                           + line)
            os.replace(tmp, self.out / "log.tsv")
            self.log_rows = None
        shown = ", ".join(f"{k.replace('_', ' ')} {v:.4g}" for k, v in self.last_val.items())
        log.info(f"pretrain: step {self.step}: loss {train_loss:.4f}" + (f", {shown}" if shown else "")
                 + f", {per_s:,.0f} {self.task.unit}/s")


def log_columns(task) -> tuple[str, ...]:
    """log.tsv's columns for a task."""
    return ("step", "epoch", "lr", "train_loss", "val_loss", *task.metrics, "seconds", f"{task.unit}_per_s",
            "data_wait")


def read_log(path: Path, step: int, columns: tuple[str, ...] | None = None) -> list[list[str]]:
    """The rows of a log.tsv up to ``step`` (those after a checkpoint are redone by the resumed run), laid out
    in ``columns`` when given (a log of an older glmkit lacks later metrics: empty there)."""
    if not path.exists():
        return []
    header, *lines = path.read_text().split("\n")
    names = header.split("\t")
    rows = [line.split("\t") for line in lines[:-1]]  # the last piece: "" or a row a kill cut short
    rows = [r for r in rows if len(r) == len(names) and int(r[0]) <= step]
    if columns is None or tuple(names) == tuple(columns):
        return rows
    return [[dict(zip(names, r)).get(c, "") for c in columns] for r in rows]


def plot_training_curves(log_path: Path, png: Path, curves: dict[str, tuple[str, ...]], title: str) -> None:
    """One panel per entry of ``curves`` (panel title -> log.tsv columns) against step, as a PNG; baselines
    (columns naming a mean-label or unigram baseline) dashed. Columns an older log lacks are left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [line.split("\t") for line in Path(log_path).read_text().splitlines()]
    col = {name: [float(r[i]) if i < len(r) and r[i] else math.nan for r in rows[1:]] for i, name in enumerate(rows[0])}
    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 4), squeeze=False)
    for ax, (panel, columns) in zip(axes[0], curves.items()):
        for k, name in enumerate(c for c in columns if c in col):
            baseline = "mean_label" in name or "unigram" in name
            label = ("train" if name.startswith("train") else
                     ("mean-label baseline" if "mean_label" in name else "unigram baseline") if baseline else
                     "validation")
            x, y = np.array(col["step"]), np.array(col[name])
            keep = ~np.isnan(y)
            ax.plot(x[keep], y[keep], "--" if baseline else "-", color="0.45" if baseline else f"C{k}", label=label)
        ax.set(xlabel="step", ylabel=panel, title=f"{title} {panel}")
        ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
