"""--device and --precision, resolved the same way by every command that runs a model."""

from __future__ import annotations

import contextlib
import logging

import torch

from glmkit.errors import GlmkitUsageError

log = logging.getLogger("glmkit")


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
    if dtype == torch.bfloat16 and device.type == "cpu" and not _cpu_has_bf16_kernels():
        log.warning("--precision bf16: this CPU lacks the instructions oneDNN's bf16 kernels need (AVX-512 or "
                    "AMX); bf16 will run, but many times slower than fp32")
    return dtype


def _cpu_has_bf16_kernels() -> bool:
    """oneDNN's own test (AVX-512 at least; with AVX512-BF16 or AMX, bf16 products run ~2-4x fp32's speed; on
    AVX2 alone they were ~20x slower, measured on an earlier machine)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return True   # unknown: no warning


@contextlib.contextmanager
def torch_threads(n: int):
    """torch's intra-op threads set to ``n`` and numpy's BLAS to one for a block, then both put back: a library
    caller keeps its own settings. numpy's products (a batch's PCA labels, in the data thread) run beside
    torch's: on their own BLAS threads they took the cores torch's threads wait on (bench/tricks.py
    blas-beside-torch: a gLM training step's forward pass 172 -> 126 ms in bf16)."""
    from glmkit.resources import one_blas_thread

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        with one_blas_thread():
            yield
    finally:
        torch.set_num_threads(before)
