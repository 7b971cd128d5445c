"""--device and --precision, resolved the same way by every command that runs a model."""

from __future__ import annotations

import contextlib

import torch

from glmkit.errors import GlmkitUsageError


def resolve_device(spec: str) -> torch.device:
    """'auto' (first GPU if any, else CPU), 'cpu', 'cuda' or 'cuda:N'."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise GlmkitUsageError(f"--device {spec}: expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise GlmkitUsageError(f"--device {spec}: no CUDA GPU is visible (CUDA_VISIBLE_DEVICES, drivers?)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise GlmkitUsageError(f"--device {spec}: only {torch.cuda.device_count()} GPU(s) visible")
    elif device.type != "cpu":
        raise GlmkitUsageError(f"--device {spec}: expected auto, cpu, cuda or cuda:N")
    return device


def resolve_precision(spec: str, device: torch.device) -> torch.dtype:
    """'auto': bf16 on GPUs that support it, else fp16 on GPU; fp32 on CPU (exact, and faster there)."""
    if spec == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[spec]
    if dtype == torch.float16 and device.type == "cpu":
        raise GlmkitUsageError("--precision fp16 needs a GPU; use fp32 or bf16 on CPU")
    return dtype


@contextlib.contextmanager
def torch_threads(n: int):
    """torch's intra-op threads set to ``n`` for a block, then put back: a library caller keeps its own setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def keep_freed_memory() -> bool:
    """Ask glibc to reuse freed activation buffers instead of returning them to the OS; True if it agreed.

    By default glibc serves allocations over 32 MiB with mmap and unmaps them on
    free, so every forward pass page-faults its large activations anew (see
    bench/tricks.py malloc). Same effect as the MALLOC_* environment variables or
    jemalloc/tcmalloc; no-op off glibc. Process-wide and permanent (glibc cannot
    report the previous values to restore), so only glmkit's own command-line
    process calls it (glmkit.cli.main), never a library caller's.
    """
    import ctypes
    import ctypes.util
    import logging

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
    # the largest mmap threshold glibc accepts is HEAP_MAX/2 (32 MiB on 32-bit, 32 MiB x 2 on 64-bit builds vary):
    # try 1 GiB, then smaller
    agreed = any(mallopt(M_MMAP_THRESHOLD, size) == 1 for size in (1 << 30, 1 << 25))
    agreed = agreed and mallopt(M_TRIM_THRESHOLD, (1 << 31) - 1) == 1 and mallopt(M_TOP_PAD, 256 << 20) == 1
    if not agreed:
        logging.getLogger("glmkit").debug("glibc refused the malloc settings; freed buffers go back to the OS")
    return agreed
