"""Crashes, signals, concurrent writers, a full disk, determinism: what a cluster does to long jobs.

Each crash is real: the command runs in its own process (`python -m glmkit`
semantics, through glmkit.cli.main) with a hook that sends the process a
signal at a chosen point (after the k-th finished chunk, during step k), so the
point is reproducible while the death is not simulated: SIGKILL runs no
cleanup at all. The rerun must equal an uninterrupted run.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import zarr

from conftest import TEST_DATA, assert_one_line_error, link_inputs, run

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, esm_checkpoint, called_store, embedded_store):
    d = tmp_path_factory.mktemp("reliability")
    link_inputs(d, called_store, embedded_store)
    return d, Path(esm_checkpoint[0])


def glmkit(args, hook: str = "", **kwargs) -> subprocess.CompletedProcess:
    """Run glmkit's console entry point in a new process, after ``hook`` (Python) has patched it."""
    code = "import os, signal, sys\n" + textwrap.dedent(hook) + (
        f"\nsys.argv = ['glmkit', *{[str(a) for a in args]!r}]\nfrom glmkit.cli import main\nmain()\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, **kwargs)


def signal_after_chunks(module: str, target: str, count: int, sig: int) -> str:
    """A hook: ``module.target`` (a function writing one chunk) sends ``sig`` to the process after ``count`` calls."""
    owner, _, name = target.rpartition(".")
    where = f"m.{owner}" if owner else "m"
    return f"""
import {module} as m
_calls = [0]
_original = {where}.{name}
def _hooked(*args, **kwargs):
    result = _original(*args, **kwargs)
    _calls[0] += 1
    if _calls[0] == {count}:
        os.kill(os.getpid(), {int(sig)})
    return result
{where}.{name} = _hooked
"""


def arrays(path: Path) -> dict[str, np.ndarray]:
    group = zarr.open_group(str(path), mode="r")
    return {name: group[name][:] for name in _array_names(group)}


def _array_names(group, prefix=""):
    for name, node in group.members():
        full = f"{prefix}{name}"
        if isinstance(node, zarr.Array):
            yield full
        else:
            yield from _array_names(node, full + "/")


def assert_same_arrays(a: Path, b: Path) -> None:
    x, y = arrays(a), arrays(b)
    assert sorted(x) == sorted(y)
    for name in x:
        np.testing.assert_array_equal(x[name], y[name], err_msg=name)


# -- embed ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_embed_stopped_part_way_resumes_to_the_uninterrupted_result(inputs, tmp_path, sig):
    d, esm = inputs
    args = ["embed", d / "el.zarr", "-m", esm, "--chunk-rows", "32", "--threads", "1"]
    assert glmkit([*args, "-o", tmp_path / "whole.zarr", "-q"]).returncode == 0
    stopped = glmkit([*args, "-o", tmp_path / "out.zarr"],
                     signal_after_chunks("glmkit.io.embeddings", "ResumableEmbeddingWriter.write_chunk", 3, sig))
    assert stopped.returncode == (-9 if sig == signal.SIGKILL else 128 + sig), stopped.stderr
    assert not (tmp_path / "out.zarr").exists() and (tmp_path / ".out.zarr.work").is_dir()
    if sig != signal.SIGKILL:  # a clean stop says so, and how to resume
        last = stopped.stderr.strip().splitlines()[-1]
        assert last.startswith(f"glmkit embed: stopped by {signal.Signals(sig).name}; 3 of ")
        assert ".out.zarr.work: the same command resumes from them" in last
        assert not (tmp_path / ".out.zarr.lock").exists()
    resumed = glmkit([*args, "-o", tmp_path / "out.zarr"])
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr and "(3 of " in resumed.stderr
    assert_same_arrays(tmp_path / "whole.zarr", tmp_path / "out.zarr")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.zarr", "whole.zarr"]


# -- pretrain -------------------------------------------------------------------------------------------------

def _pretrain_args(d):
    return ["pretrain", d / "el.zarr", "-e", d / "emb.zarr", "--preset", "tiny", "--dropout", "0.1",
            "--max-steps", "8", "--batch-size", "4", "--checkpoint-every", "3", "--val-every", "2", "--log-every",
            "1", "--warmup-steps", "2", "--threads", "1", "--val-fraction", "0.2"]


def _same_training(a: Path, b: Path) -> None:
    from safetensors.torch import load_file

    x, y = load_file(str(a / "checkpoint" / "model.safetensors")), load_file(str(b / "checkpoint" / "model.safetensors"))
    assert sorted(x) == sorted(y) and all(x[k].equal(y[k]) for k in x)
    logs = [[row.split("\t")[:-3] for row in (p / "log.tsv").read_text().splitlines()] for p in (a, b)]
    assert logs[0] == logs[1]  # every column but the timings
    assert (a / "curves.png").read_bytes() == (b / "curves.png").read_bytes()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_pretrain_stopped_part_way_resumes_to_the_uninterrupted_run(inputs, tmp_path, sig):
    """Dropout on: the resumed run must restore the generators that drive it, not only the weights."""
    d, _ = inputs
    assert glmkit([*_pretrain_args(d), "-o", tmp_path / "whole", "-q"]).returncode == 0
    # the signal arrives during step 5 (0-based 4): SIGKILL leaves the step-3 checkpoint; SIGTERM lets the step
    # finish, checkpoints step 5 and stops
    hook = signal_after_chunks("glmkit.data.stream", "Prefetcher.get", 5, sig)  # once per training step
    stopped = glmkit([*_pretrain_args(d), "-o", tmp_path / "run"], hook)
    assert stopped.returncode == (-9 if sig == signal.SIGKILL else 128 + sig), stopped.stderr
    if sig == signal.SIGTERM:
        assert stopped.stderr.strip().splitlines()[-1] == (
            f"glmkit pretrain: stopped by SIGTERM; checkpoint at step 5 saved in {tmp_path / 'run' / 'checkpoint'}: "
            "add --resume to the same command to continue")
    resumed = glmkit([*_pretrain_args(d), "-o", tmp_path / "run", "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming at step {3 if sig == signal.SIGKILL else 5}" in resumed.stderr
    _same_training(tmp_path / "whole", tmp_path / "run")


# -- contextualize --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model(inputs):
    d, _ = inputs
    assert run("pretrain", d / "el.zarr", "-e", d / "emb.zarr", "-o", d / "glm", "--preset", "tiny", "--max-steps", "2",
               "--batch-size", "2", "--threads", "1", "-q").exit_code == 0
    return d / "glm"


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_contextualize_stopped_part_way_resumes_to_the_uninterrupted_result(inputs, model, tmp_path, sig):
    d, _ = inputs
    args = ["contextualize", d / "el.zarr", "-e", d / "emb.zarr", "-m", model, "--attention", "--predictions",
            "--batch-size", "4", "--threads", "1"]
    groups = "import glmkit.models.glm.context\nglmkit.models.glm.context.GROUP_WINDOWS = 4\n"  # several groups of contigs
    assert glmkit([*args, "-o", tmp_path / "whole.zarr", "-q"], groups).returncode == 0
    stopped = glmkit([*args, "-o", tmp_path / "out.zarr"], groups + signal_after_chunks("numpy", "savez", 2, sig))
    assert stopped.returncode == (-9 if sig == signal.SIGKILL else 128 + sig), stopped.stderr
    if sig == signal.SIGTERM:
        assert "the same command resumes from them" in stopped.stderr.strip().splitlines()[-1]
    resumed = glmkit([*args, "-o", tmp_path / "out.zarr"], groups)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr and "(2 groups done)" in resumed.stderr
    assert_same_arrays(tmp_path / "whole.zarr", tmp_path / "out.zarr")


# -- two writers, a full disk ---------------------------------------------------------------------------------

def test_two_embed_processes_on_one_output(inputs, tmp_path):
    """The second is refused (naming the first) and the first finishes untouched: no shared work folder."""
    d, esm = inputs
    gate = tmp_path / "gate"
    hook = f"""
import time
import glmkit.io.embeddings as m
_original = m.ResumableEmbeddingWriter.write_chunk
def _hooked(self, *args):
    _original(self, *args)
    open({str(tmp_path / 'started')!r}, 'w').close()
    while not os.path.exists({str(gate)!r}):
        time.sleep(0.02)
m.ResumableEmbeddingWriter.write_chunk = _hooked
"""
    args = ["embed", d / "el.zarr", "-m", esm, "--chunk-rows", "64", "--threads", "1", "-o", tmp_path / "out.zarr"]
    code = "import os, signal, sys\n" + textwrap.dedent(hook) + (
        f"\nsys.argv = ['glmkit', *{[str(a) for a in args]!r}, '-q']\nfrom glmkit.cli import main\nmain()\n")
    first = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        while not (tmp_path / "started").exists():
            assert first.poll() is None, first.stderr.read()
        second = run(*args, "--force")
        assert_one_line_error(second, "out.zarr", "another glmkit run is writing it", f"pid {first.pid}")
    finally:
        gate.touch()
        assert first.wait(timeout=120) == 0, first.stderr.read()
    whole = run("embed", d / "el.zarr", "-m", esm, "--chunk-rows", "64", "-o", tmp_path / "whole.zarr", "-q")
    assert whole.exit_code == 0
    assert_same_arrays(tmp_path / "whole.zarr", tmp_path / "out.zarr")


def _no_bigger_than(limit: int):
    """For a child process: files may not grow past ``limit`` bytes (EFBIG, like a full disk), SIGXFSZ ignored."""
    import resource

    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.parametrize("command", ["call", "embed"])
def test_disk_full_leaves_the_previous_output_intact(inputs, tmp_path, command):
    d, esm = inputs
    if command == "call":
        args = ["call", TEST_DATA / "multi_contigs.fna", "-o", tmp_path / "out.zarr", "--gff", tmp_path / "out.gff"]
    else:
        args = ["embed", d / "el.zarr", "-m", esm, "-o", tmp_path / "out.zarr", "--chunk-rows", "256"]  # 64 KB chunks
    assert glmkit([*args, "-q"]).returncode == 0
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    full = glmkit([*args, "--force"], preexec_fn=_no_bigger_than(40_000))
    assert full.returncode == 1, full.stderr
    line = full.stderr.strip().splitlines()[-1]
    assert line.startswith(f"glmkit {command}: error: {tmp_path / 'out.'}") and "File too large" in line, line
    assert "partial" not in line and ".work" not in line  # names the user's output, not a temporary name
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before


# -- determinism ------------------------------------------------------------------------------------------------

def test_every_command_twice_gives_identical_outputs_for_any_threads(inputs, model, tmp_path):
    """Same inputs, options and seed: byte-identical TSV and GFF, identical arrays, with 1 or 2 threads (pretrain:
    for a given thread count; across thread counts its float reductions round differently, see
    docs/reliability.md)."""
    d, esm = inputs
    for t in ("1", "2", "2"):
        out = tmp_path / f"run{t}{'b' if (tmp_path / f'run{t}').exists() else ''}"
        out.mkdir()
        steps = [
            ("call", TEST_DATA / "multi_contigs.fna", "-o", out / "el.zarr", "--gff", out / "g.gff", "-a", out / "p.faa"),
            ("filter", out / "el.zarr", "-o", out / "f.zarr", "--report", out / "r.tsv", "--glm-subcontigs"),
            ("embed", out / "el.zarr", "-m", esm, "-o", out / "emb.zarr", "--map", out / "map.tsv"),
            ("pretrain", out / "el.zarr", "-e", out / "emb.zarr", "-o", out / "glm", "--preset", "tiny", "--dropout",
             "0.1", "--max-steps", "3", "--batch-size", "4", "--val-fraction", "0.2", "--val-every", "1"),
            ("contextualize", out / "el.zarr", "-e", out / "emb.zarr", "-m", model, "-o", out / "ctx.zarr",
             "--attention", "--predictions"),
        ]
        for step in steps:
            threads = () if step[0] == "filter" else ("--threads", t)  # filter runs in one thread
            result = run(*step, *threads, "-q")
            assert result.exit_code == 0, (step, result.stderr)
    runs = [tmp_path / "run1", tmp_path / "run2", tmp_path / "run2b"]
    for other in runs[1:]:
        for text in ("g.gff", "p.faa", "r.tsv", "map.tsv"):
            assert (runs[0] / text).read_bytes() == (other / text).read_bytes(), text
        for store in ("el.zarr", "f.zarr", "emb.zarr", "ctx.zarr"):
            assert_same_arrays(runs[0] / store, other / store)
    _same_training(runs[1] / "glm", runs[2] / "glm")
