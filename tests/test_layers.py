"""glmkit.models.layers.linear: the oneDNN GEMMs (forward and both gradients) against float64 products written
here, whichever path this machine's CPU selects (the oneDNN one is forced where the op exists)."""

from __future__ import annotations

import pytest
import torch

from glmkit.models import layers

ONEDNN = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None) is not None


@pytest.fixture(params=["selected", "onednn"])
def path(request, monkeypatch):
    if request.param == "onednn":
        if not ONEDNN:
            pytest.skip("this torch has no oneDNN linear")
        monkeypatch.setattr(layers, "onednn_fp32_gemms", lambda: True)
    return request.param


@pytest.mark.parametrize("shape", [(37, 19), (3, 11, 19)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_and_its_gradients_equal_float64_products(path, shape, bias):
    torch.manual_seed(0)
    x = torch.randn(*shape, requires_grad=True)
    w = torch.randn(23, 19, requires_grad=True)
    b = torch.randn(23, requires_grad=True) if bias else None
    y = layers.linear(x, w, b)
    g = torch.randn_like(y)
    y.backward(g)

    x64, w64, g64 = x.detach().double(), w.detach().double(), g.double()
    expected = x64 @ w64.T + (b.detach().double() if bias else 0)
    flat_x, flat_g = x64.reshape(-1, 19), g64.reshape(-1, 23)
    assert y.shape == (*shape[:-1], 23)
    torch.testing.assert_close(y.double(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x.grad.double(), g64 @ w64, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(w.grad.double(), flat_g.T @ flat_x, rtol=1e-5, atol=1e-5)
    if bias:
        torch.testing.assert_close(b.grad.double(), flat_g.sum(0), rtol=1e-5, atol=1e-5)
    if path == "onednn":  # the forced path is the one that ran
        assert type(y.grad_fn.next_functions[0][0]).__name__ == "_OneDNNLinearBackward"


def test_only_the_gradients_asked_for_are_computed(path):
    x = torch.randn(8, 5)                      # an input without gradient, as the first layer's features
    lin = layers.Linear(5, 4)
    lin(x).sum().backward()
    assert lin.weight.grad is not None and lin.bias.grad is not None
    torch.testing.assert_close(lin.bias.grad, torch.full((4,), 8.0))
    with torch.no_grad():
        torch.testing.assert_close(lin(x), x @ lin.weight.T + lin.bias, rtol=1e-5, atol=1e-6)


def test_no_rows(path):
    lin = layers.Linear(8, 4)
    x = torch.randn(0, 8, requires_grad=True)
    y = lin(x)
    y.sum().backward()
    assert y.shape == (0, 4) and x.grad.shape == (0, 8) and float(lin.weight.grad.abs().sum()) == 0.0


def test_autocast_and_other_dtypes_take_torch_linear(monkeypatch):
    monkeypatch.setattr(layers, "onednn_fp32_gemms", lambda: True)
    lin = layers.Linear(16, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert lin(torch.randn(4, 16)).dtype == torch.bfloat16
    y = layers.linear(torch.randn(4, 16, dtype=torch.float64, requires_grad=True), lin.weight.double())
    assert y.dtype == torch.float64 and type(y.grad_fn).__name__ != "_OneDNNLinearBackward"


def test_the_module_keeps_nn_linear_names():
    assert set(layers.Linear(3, 2).state_dict()) == set(torch.nn.Linear(3, 2).state_dict())
