#!/usr/bin/env python3
"""What one training step launches: operators and host synchronisations, counted by torch's profiler on CPU.

    python bench/step_ops.py [--arch glm|glm2|both] [--modes eager,static,compiled] [--step 3]

Runs `glmkit pretrain` itself (run_pretrain, the command's library entry) on a synthetic corpus at the paper's
shapes — gLM: 19 layers, hidden 1280, 10 heads, 1280-dim embeddings; gLM2: the 150M preset (30 layers, dim 640)
at --context 512 — with a small batch (operator counts do not depend on the batch size), and profiles the
optimiser step number --step (batch arrival to optimiser step: forward, loss, backward, clipping, AdamW). On a
GPU every operator counted here is at least one kernel launch, and every host synchronisation stalls the launch
queue: the numbers bound what `--compile` or CUDA graphs must remove (issue 37).

Printed per task and mode (eager: pretrain's default step; static: --static-shapes; compiled: --static-shapes
--compile, which on one GPU replays the step as CUDA graphs): kernel launches in the step (kernel_launches: the
rule) and per layer, as a share of the first mode's, top-level aten operators, the host-synchronising ones by name
(aten::nonzero — boolean-mask indexing —, aten::item / _local_scalar_dense, masked_select), and the most launched
kernels; and the wall time of the step before the profiled one (unprofiled).

    python bench/step_ops.py --device cuda [--precision bf16] [--step 8]

On a GPU the profiler also records the device: the kernels that ran, the host's launch calls (cudaLaunchKernel
and the like; one cudaGraphLaunch for a replayed graph), and the GPU's busy time (the kernels' summed durations)
against the step's wall time: a step is GPU-bound when busy is close to wall. Written for issue 37's GPU rows and
not yet run on one (no GPU was lent when it was written).
"""

from __future__ import annotations

import argparse
import collections
import functools
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
SYNCS = ("aten::nonzero", "aten::item", "aten::_local_scalar_dense", "aten::masked_select", "aten::unique",
         "aten::is_nonzero")
# operators that make a view of their input: no kernel on a GPU
VIEWS = {f"aten::{n}" for n in ("detach", "reshape", "t", "permute", "transpose", "view", "squeeze", "unsqueeze",
                                "expand", "as_strided", "slice", "select", "alias", "_unsafe_view", "split", "chunk",
                                "narrow", "flatten", "unflatten", "unbind", "view_as", "expand_as", "_reshape_alias")}


# operators that launch nothing on a GPU: allocations, metadata, conjugation flags; host reads are counted as
# synchronisations instead
NO_KERNEL = VIEWS | {f"aten::{n}" for n in ("empty", "empty_like", "empty_strided", "resize_", "resolve_conj",
                                            "resolve_neg", "result_type", "set_", "lift_fresh", "detach_", "item",
                                            "_local_scalar_dense", "is_nonzero")}


@functools.cache
def composite(name: str) -> bool:
    """Whether an aten operator is only a composition of others (CompositeImplicitAutograd, no kernel of its own:
    matmul, linear, layer_norm, einsum, dropout, a `to`), whose parts are what runs."""
    packet = getattr(torch.ops.aten, name.removeprefix("aten::"), None)
    keys = set()
    for overload in (packet.overloads() if packet is not None else []):
        qualified = name if overload == "default" else f"{name}.{overload}"
        for key in ("CPU", "CompositeImplicitAutograd"):
            try:
                if torch._C._dispatch_has_kernel_for_dispatch_key(qualified, key):
                    keys.add(key)
            except RuntimeError:   # an overload of TorchScript's (aten::gt.int): no dispatcher entry
                pass
    return keys == {"CompositeImplicitAutograd"}


def _launches(e) -> bool:
    if "cpp_fused" in e.name:     # a kernel inductor generated (each one event under enable_kernel_profile)
        return True
    return e.name.startswith(("aten::", "mkldnn::")) and e.name not in NO_KERNEL and not composite(e.name)


def kernel_launches(events) -> collections.Counter:
    """What a GPU would launch, by name: every outermost operator that has a kernel of its own — one launch,
    whatever its CPU implementation calls inside (CPU bmm copies strided inputs; CPU fused AdamW and foreach
    operators loop over tensors: one multi-tensor launch group on CUDA) —, the parts of composite operators, and
    inductor's generated kernels. The same rule for eager and compiled steps; inductor fuses somewhat differently
    for CUDA (Triton) than for CPU, so the compiled count is an estimate of a GPU's."""
    found: collections.Counter = collections.Counter()
    for e in events:
        if not _launches(e):
            continue
        parent = e.cpu_parent
        while parent is not None and not _launches(parent):
            parent = parent.cpu_parent
        if parent is None:
            found["inductor kernel" if "cpp_fused" in e.name else e.name] += 1
    return found


def inside(e, name: str) -> bool:
    while e is not None:
        if e.name == name:
            return True
        e = e.cpu_parent
    return False


def top_level_aten(events) -> list:
    """aten operators not called from another aten operator: what the step itself dispatches."""
    out = []
    for e in events:
        if not e.name.startswith("aten::"):
            continue
        parent = e.cpu_parent
        while parent is not None and not parent.name.startswith("aten::"):
            parent = parent.cpu_parent
        if parent is None:
            out.append(e)
    return out


MODES = {"eager": {}, "static": {"static_shapes": True},
         "compiled": {"static_shapes": True, "compile_model": True}}


LAUNCH_CALLS = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx", "cudaGraphLaunch",
                "cudaLaunchCooperativeKernel")


def device_summary(events) -> dict:
    """On a GPU: kernels (and copies) run, the host's launch calls, the kernels' summed time (ms; one stream: they
    do not overlap) and the most frequent kernels."""
    kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
    return {"kernels": len(kernels), "launch_calls": sum(e.name in LAUNCH_CALLS for e in events),
            "busy_ms": sum(e.time_range.elapsed_us() for e in kernels) / 1e3,
            "common_kernels": collections.Counter(e.name[:60] for e in kernels).most_common(6)}


def profile_step(arch: str, step: int, work: Path, mode: str = "eager", device: str = "cpu",
                 precision: str = "fp32") -> dict:
    from glmkit.commands.pretrain import PretrainOptions, run_pretrain
    from glmkit.data.synthetic import SyntheticSpec, write_corpus
    from glmkit.train import Trainer

    corpus = work / "synthetic"
    if not (corpus / "train.zarr").exists():
        write_corpus(corpus, SyntheticSpec(train_genomes=8, test_genomes=2, genes_per_genome=120, families=60,
                                           operon_templates=10, dim=1280, intergenic=True,
                                           protein_grammar="markov"))
    found: dict = {}
    original = Trainer._optimizer_step

    cuda = device == "cuda"
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])

    def synchronize():
        if cuda:
            torch.cuda.synchronize()

    def timed(key, *args):   # the step, its wall time (ms, the device's work included) into found[key]
        synchronize()
        start = time.perf_counter()
        result = original(*args)
        synchronize()
        found[key] = (time.perf_counter() - start) * 1e3
        return result

    def profiled(self, micro, loss_sum, bad):
        if self.step == step - 2:   # the step before, unprofiled
            return timed("wall_ms", self, micro, loss_sum, bad)
        if self.step != step - 1:
            return original(self, micro, loss_sum, bad)
        synchronize()   # the previous step's kernels finish before the profile starts: busy time is this step's
        with torch.profiler.profile(activities=activities) as prof:
            result = timed("profiled_wall_ms", self, micro, loss_sum, bad)
        events = prof.events()
        if cuda:
            found.update(device_summary(events))
        top = top_level_aten(events)
        launches = kernel_launches(events)
        # the CPU fused AdamW reads each parameter's step count with item() from a CPU tensor: no device to wait
        # for (on CUDA the fused kernel takes the step counts on the device), so it is counted apart
        found.update(top=len(top), all=sum(e.name.startswith("aten::") for e in events),
                     compute=sum(e.name not in VIEWS for e in top),
                     syncs=collections.Counter(e.name for e in events if e.name in SYNCS
                                               and not inside(e, "aten::_fused_adamw_")),
                     adamw_items=sum(e.name == "aten::item" and inside(e, "aten::_fused_adamw_") for e in events),
                     common=collections.Counter(e.name for e in top).most_common(12),
                     launches=sum(launches.values()), common_launches=launches.most_common(10),
                     layers=self.task.cfg.num_layers if hasattr(self.task.cfg, "num_layers") else self.task.cfg.depth)
        return result

    Trainer._optimizer_step = profiled
    import torch._inductor.config as inductor_config

    inductor_config.cpp.enable_kernel_profile = True   # each generated kernel an event of the profiler
    try:
        if arch == "glm":
            options = PretrainOptions(preset="paper", max_steps=step, batch_size=2, val_every=10_000,
                                      checkpoint_every=10_000, log_every=10_000, threads=2, warmup_steps=1,
                                      device=device, precision=precision, **MODES[mode])
            run_pretrain([str(corpus / "train.zarr")], str(corpus / "embeddings.zarr"), str(work / "glm"), options,
                         force=True)
        else:
            options = PretrainOptions(arch="glm2", preset="150M", context=512, max_steps=step, batch_size=1,
                                      val_every=10_000, checkpoint_every=10_000, log_every=10_000, threads=2,
                                      warmup_steps=1, device=device, precision=precision, **MODES[mode])
            run_pretrain([str(corpus / "train.zarr")], None, str(work / "glm2"), options, force=True)
    finally:
        Trainer._optimizer_step = original
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=("glm", "glm2", "both"), default="both")
    parser.add_argument("--modes", default="eager,static,compiled",
                        help="comma-separated: eager (pretrain's default step), static (--static-shapes), "
                             "compiled (--static-shapes --compile)")
    parser.add_argument("--step", type=int, help="the step profiled [default: 3 on CPU; 8 on a GPU, so that CUDA "
                                                 "graphs are recorded before it and replayed in it]")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    args = parser.parse_args()
    args.step = args.step or (8 if args.device == "cuda" else 3)
    if args.step < 3:
        parser.error("--step must be at least 3 (the step before the profiled one is timed, after the first)")
    with tempfile.TemporaryDirectory() as tmp:
        for arch in (("glm", "glm2") if args.arch == "both" else (args.arch,)):
            baseline = None
            for mode in args.modes.split(","):
                found = profile_step(arch, args.step, Path(tmp), mode, args.device, args.precision)
                baseline = baseline or found["launches"]
                per = found["layers"]
                print(f"\n{arch} {mode}: step {args.step}, {per} layers: {found['launches']:,} kernel launches "
                      f"({found['launches'] / per:.0f} per layer; {found['launches'] / baseline:.2f} of "
                      f"{args.modes.split(',')[0]}'s); {found['top']:,} top-level aten operators "
                      f"({found['compute']:,} not views)")
                print(f"  host-synchronising operators: {dict(found['syncs']) or 'none'} (and "
                      f"{found['adamw_items']} item() inside the CPU fused AdamW, on CPU tensors)")
                print("  most launched: " + ", ".join(f"{name.removeprefix('aten::')} {n}"
                                                      for name, n in found["common_launches"]))
                print(f"  wall: {found['wall_ms']:.1f} ms a step ({args.device}, {args.precision}; "
                      f"{found['profiled_wall_ms']:.1f} ms profiled)")
                if args.device == "cuda":
                    print(f"  on the GPU: {found['kernels']:,} kernels, {found['launch_calls']:,} launch calls; busy "
                          f"{found['busy_ms']:.1f} ms of the profiled step's {found['profiled_wall_ms']:.1f} "
                          f"({found['busy_ms'] / found['profiled_wall_ms']:.0%})")
                    print("  most frequent kernels: " + ", ".join(f"{k} {n}" for k, n in found["common_kernels"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
