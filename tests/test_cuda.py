"""The CUDA paths of every command that runs a model, against the same command on the CPU: fp32 equal to float
tolerance, bf16 and fp16 within stated tolerances, fp16's gradient scaler and every generator (CUDA's included)
restored on resume. Skipped where no CUDA GPU is visible (CI has none); on a GPU node: pytest tests/test_cuda.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import zarr

from conftest import TEST_DATA, checkpoint_weights, die_after_checkpoint, run
from glmkit.io.embeddings import EmbeddingStore

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible")


@pytest.fixture(scope="module")
def data(tmp_path_factory, esm_checkpoint):
    d = tmp_path_factory.mktemp("cuda")
    assert run("call", TEST_DATA / "multi_contigs.fna", "-o", d / "el.zarr", "-q").exit_code == 0
    assert run("embed", d / "el.zarr", "-o", d / "emb.zarr", "-m", esm_checkpoint[0], "-q",
               "--device", "cpu").exit_code == 0
    return d


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def _log(path) -> list[dict]:
    rows = [line.split("\t") for line in (path / "log.tsv").read_text().splitlines()]
    return [dict(zip(rows[0], r)) for r in rows[1:]]



def _pretrain(data, out, device: str, precision: str, steps: int = 6, resume: bool = False, **kw) -> list[dict]:
    from glmkit.commands.pretrain import PretrainOptions, run_pretrain

    options = PretrainOptions(preset="tiny", max_steps=steps, batch_size=4, warmup_steps=2, val_every=3,
                              checkpoint_every=3, log_every=1, lr=1e-3, val_fraction=0.2, seed=5, threads=1,
                              device=device, precision=precision, **kw)
    run_pretrain([str(data / "el.zarr")], str(data / "emb.zarr"), str(out), options, resume=resume)
    return _log(out)


def _mean_difference(a: dict, b: dict) -> float:
    """Mean absolute difference over all weights of two checkpoints. (A mean, not a maximum: Adam turns a
    rounding-sized gradient into a full lr-sized step, so a few weights may differ by lr between runs whose
    arithmetic differs only in rounding; see test_train.)"""
    total = sum(float((a[k].double() - b[k].double()).abs().sum()) for k in a)
    return total / sum(a[k].numel() for k in a)


def test_auto_precision_is_bf16_on_a_gpu_that_has_it():
    from glmkit.models.device import resolve_device, resolve_precision

    gpu = resolve_device("auto")
    assert gpu.type == "cuda"
    assert resolve_precision("auto", gpu) == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)


def test_embed_on_the_gpu(data, esm_checkpoint, tmp_path):
    """fp32 on the GPU equals the CPU's embeddings; bf16 every protein at cosine >= 0.999 to them."""
    stores = {}
    for name, device, precision in (("cpu", "cpu", "fp32"), ("gpu32", "cuda", "fp32"), ("gpu16", "cuda", "bf16")):
        r = run("embed", data / "el.zarr", "-o", tmp_path / f"{name}.zarr", "-m", esm_checkpoint[0], "-q",
                "--device", device, "--precision", precision)
        assert r.exit_code == 0, r.stderr
        store = EmbeddingStore(tmp_path / f"{name}.zarr")
        stores[name] = store.get(EmbeddingStore(data / "emb.zarr").fixed_hashes())   # the same row order
    assert len(stores["cpu"]) > 100
    np.testing.assert_allclose(stores["gpu32"], stores["cpu"], atol=1e-4, rtol=1e-4)
    cos = _cosines(stores["gpu16"], stores["cpu"])
    assert cos.min() >= 0.999, cos.min()
    assert np.abs(stores["gpu16"] - stores["cpu"]).max() > 1e-6   # bf16 really ran (not fp32 under another name)


def test_pretrain_fp32_on_the_gpu_equals_the_cpu(data, tmp_path):
    """The same losses step by step and the same weights (the data path, masking and dropout streams are CPU-side;
    only the arithmetic moved)."""
    cpu = _pretrain(data, tmp_path / "cpu", "cpu", "fp32")
    gpu = _pretrain(data, tmp_path / "gpu", "cuda", "fp32")
    assert [r["step"] for r in cpu] == [r["step"] for r in gpu] and len(cpu) == 6
    for x, y in zip(cpu, gpu):
        assert float(y["train_loss"]) == pytest.approx(float(x["train_loss"]), rel=1e-4), (x, y)
    assert _mean_difference(checkpoint_weights(tmp_path / "cpu"), checkpoint_weights(tmp_path / "gpu")) < 1e-6


def test_pretrain_bf16_on_the_gpu_tracks_fp32(data, tmp_path):
    """40 steps: bf16's training loss within 2 % of fp32's at every step, and it learns as much."""
    a = np.array([float(r["train_loss"]) for r in _pretrain(data, tmp_path / "fp32", "cuda", "fp32", steps=40)])
    b = np.array([float(r["train_loss"]) for r in _pretrain(data, tmp_path / "bf16", "cuda", "bf16", steps=40)])
    assert np.abs(b / a - 1).max() < 0.02, np.abs(b / a - 1).max()
    assert a[-5:].mean() < 0.9 * a[:5].mean() and b[-5:].mean() < 0.9 * b[:5].mean()
    assert not np.array_equal(a, b)   # bf16 really ran


def test_fp16_on_the_gpu_scales_the_loss_and_resumes_exactly_with_dropout(data, tmp_path, monkeypatch):
    """fp16 with dropout on: the scaler's state and CUDA's generator are checkpointed; a run killed after its
    step-3 checkpoint and resumed equals an uninterrupted one, and one resumed without CUDA's generator does not
    (its dropout masks differ)."""
    import glmkit.train as train_module

    fp16 = dict(device="cuda", precision="fp16", dropout=0.1)
    whole = _pretrain(data, tmp_path / "whole", **fp16)
    state = torch.load(tmp_path / "whole" / "checkpoint" / "training_state.pt", weights_only=True)
    assert state["scaler"]["scale"] > 0 and state["scaler"]["_growth_tracker"] == 6
    assert "cuda" in state["rng"][0]
    for name in ("run", "broken"):
        die_after_checkpoint(monkeypatch, 3)
        with pytest.raises(KeyboardInterrupt):
            _pretrain(data, tmp_path / name, **fp16)
        monkeypatch.undo()
        assert json.loads((tmp_path / name / "checkpoint" / "config.json").read_text())["step"] == 3
    resumed = _pretrain(data, tmp_path / "run", resume=True, **fp16)
    for x, y in zip(whole, resumed, strict=True):
        assert float(y["train_loss"]) == pytest.approx(float(x["train_loss"]), rel=1e-5), (x, y)
    a = checkpoint_weights(tmp_path / "whole")
    assert _mean_difference(a, checkpoint_weights(tmp_path / "run")) < 1e-6
    restore = train_module._set_rng_state
    monkeypatch.setattr(train_module, "_set_rng_state", lambda s, dev: restore({"cpu": s["cpu"]}, dev))
    _pretrain(data, tmp_path / "broken", resume=True, **fp16)
    assert _mean_difference(a, checkpoint_weights(tmp_path / "broken")) > 3e-5   # 2e-4 on a CPU, bf16 in place of fp16


def test_glm2_pretrain_on_the_gpu_equals_the_cpu(data, tmp_path):
    def glm2(out, device):
        r = run("pretrain", data / "el.zarr", "--arch", "glm2", "-o", out, "--preset", "tiny", "--context", 256,
                "--max-steps", 6, "--batch-size", 4, "--warmup-steps", 2, "--val-every", 3, "--checkpoint-every", 3,
                "--log-every", 1, "--lr", "1e-3", "--val-fraction", "0.2", "--seed", 5, "--threads", 1, "-q",
                "--device", device, "--precision", "fp32")
        assert r.exit_code == 0, r.stderr
        return _log(out)

    cpu, gpu = glm2(tmp_path / "cpu", "cpu"), glm2(tmp_path / "gpu", "cuda")
    for x, y in zip(cpu, gpu, strict=True):
        assert float(y["train_loss"]) == pytest.approx(float(x["train_loss"]), rel=1e-4), (x, y)


def test_contextualize_on_the_gpu(data, tmp_path):
    """Gene embeddings and attention maps from the GPU equal the CPU's (fp32); bf16 within cosine 0.999."""
    _pretrain(data, tmp_path / "glm", "cpu", "fp32", steps=4)
    out = {}
    for name, device, precision in (("cpu", "cpu", "fp32"), ("gpu32", "cuda", "fp32"), ("gpu16", "cuda", "bf16")):
        r = run("contextualize", data / "el.zarr", "-e", data / "emb.zarr", "-m", tmp_path / "glm", "-o",
                tmp_path / f"{name}.zarr", "--attention", "-q", "--device", device, "--precision", precision)
        assert r.exit_code == 0, r.stderr
        out[name] = zarr.open_group(str(tmp_path / f"{name}.zarr"), mode="r")
    cpu, gpu32, gpu16 = (out[k]["genes/embedding"][:] for k in ("cpu", "gpu32", "gpu16"))
    np.testing.assert_allclose(gpu32, cpu, atol=1e-4, rtol=1e-4)
    assert _cosines(gpu16, cpu).min() >= 0.999
    np.testing.assert_allclose(out["gpu32"]["attention/data"][:].astype(np.float32),
                               out["cpu"]["attention/data"][:].astype(np.float32), atol=2e-3)   # stored as float16


def test_jacobian_on_the_gpu_equals_the_cpu(tmp_path):
    from conftest import make_fair_esm_checkpoint
    from glmkit.io.contacts import read_contacts

    make_fair_esm_checkpoint(tmp_path / "esm.pt", layers=2, dim=32, heads=4, seed=4)
    (tmp_path / "pair.faa").write_text(">A first\nMKVLAAGIWTREQ\n>B second\nMSTNPKLLEEAGYC\n")
    maps = {}
    for device in ("cpu", "cuda"):
        r = run("jacobian", tmp_path / "pair.faa", "-m", tmp_path / "esm.pt", "-o", tmp_path / f"{device}.npy",
                "-q", "--device", device, "--precision", "fp32")
        assert r.exit_code == 0, r.stderr
        maps[device] = read_contacts(tmp_path / f"{device}.npy").astype(np.float64)
    assert np.abs(maps["cpu"]).max() > 0
    np.testing.assert_allclose(maps["cuda"], maps["cpu"], atol=1e-4, rtol=1e-3)


def test_compiled_training_on_the_gpu_equals_eager(data, tmp_path):
    eager = _pretrain(data, tmp_path / "eager", "cuda", "bf16")
    compiled = _pretrain(data, tmp_path / "compiled", "cuda", "bf16", compile_model=True)
    for x, y in zip(eager, compiled, strict=True):
        assert float(y["train_loss"]) == pytest.approx(float(x["train_loss"]), rel=1e-2), (x, y)   # bf16 rounding
