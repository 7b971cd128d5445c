"""--device and --precision resolution (glmkit/models/device.py)."""

import logging

import pytest
import torch

from glmkit.errors import GlmkitUsageError
from glmkit.models import device


def test_precision_on_cpu(monkeypatch, caplog):
    cpu = torch.device("cpu")
    assert device.resolve_precision("auto", cpu) == torch.float32   # exact, the CPU default
    assert device.resolve_precision("fp32", cpu) == torch.float32
    with pytest.raises(GlmkitUsageError, match="fp16 needs a GPU"):
        device.resolve_precision("fp16", cpu)
    monkeypatch.setattr(device, "_cpu_has_bf16_kernels", lambda: True)
    with caplog.at_level(logging.WARNING, logger="glmkit"):
        assert device.resolve_precision("bf16", cpu) == torch.bfloat16
    assert not caplog.records
    monkeypatch.setattr(device, "_cpu_has_bf16_kernels", lambda: False)   # an AVX2-only CPU: bf16 runs, slowly
    with caplog.at_level(logging.WARNING, logger="glmkit"):
        assert device.resolve_precision("bf16", cpu) == torch.bfloat16
    assert "many times slower than fp32" in caplog.text


def test_torch_threads_restores_the_callers_settings():
    from threadpoolctl import threadpool_info

    def blas() -> set:
        return {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}

    before_torch, before_blas = torch.get_num_threads(), blas()
    with device.torch_threads(3):
        assert torch.get_num_threads() == 3 and blas() <= {1}
    assert torch.get_num_threads() == before_torch and blas() == before_blas
