"""glmkit.models.layers.linear: the oneDNN GEMMs (forward and both gradients) against float64 products written
here, whichever path this machine's CPU selects (the oneDNN one is forced where the op exists). layers.Dropout:
its masks against the binomial statistics nn.Dropout's would have."""

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
@pytest.mark.parametrize("out", [23, 11])  # out > in and in > out
def test_linear_and_its_gradients_equal_float64_products(path, shape, bias, out):
    torch.manual_seed(0)
    x = torch.randn(*shape, requires_grad=True)
    w = torch.randn(out, 19, requires_grad=True)
    b = torch.randn(out, requires_grad=True) if bias else None
    y = layers.linear(x, w, b)
    g = torch.randn_like(y)
    y.backward(g)

    x64, w64, g64 = x.detach().double(), w.detach().double(), g.double()
    expected = x64 @ w64.T + (b.detach().double() if bias else 0)
    flat_x, flat_g = x64.reshape(-1, 19), g64.reshape(-1, out)
    assert y.shape == (*shape[:-1], out)
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


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_keeps_each_element_with_probability_1_minus_p(p):
    """Over 4M elements the kept share is within 5 standard deviations of 1 - p; kept values are scaled by
    1 / (1 - p), the rest are exactly 0; neighbours (drawn from the same 64 random bits) are independent."""
    torch.manual_seed(0)
    n = 4_000_000
    x = torch.rand(n) + 1.0
    y = layers.Dropout(p).train()(x)
    kept = y != 0
    assert abs(kept.double().mean().item() - (1 - p)) < 5 * (p * (1 - p) / n) ** 0.5
    torch.testing.assert_close(y[kept], x[kept] / (1 - p))
    for lag in (1, 2, 3, 4, 5):  # the four 16-bit masks of one draw, and the next draw's
        both = (kept[:-lag] & kept[lag:]).double().mean().item()
        assert abs(both - (1 - p) ** 2) < 5 * ((1 - p) ** 2 * (1 - (1 - p) ** 2) / n) ** 0.5, lag


def test_dropout_shapes_seeds_and_eval():
    x = torch.randn(3, 5, 7)  # 105 elements: not a multiple of the four masks a draw gives
    d = layers.Dropout(0.3).train()
    torch.manual_seed(1)
    a = d(x)
    torch.manual_seed(1)
    b = d(x)
    assert a.shape == x.shape and torch.equal(a, b)
    assert not torch.equal(a, d(x))  # the generator moved on
    assert d.eval()(x) is x and layers.Dropout(0.0).train()(x) is x
    assert d.train()(torch.ones(2, 3, dtype=torch.bfloat16)).dtype == torch.bfloat16
    assert d(torch.empty(0, 4)).shape == (0, 4)
