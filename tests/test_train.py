"""glmkit.train, the one training loop: DDP equal to one process, exact resume on every rank, collective stops,
gradient accumulation, fp16 loss scaling, threads per process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import checkpoint_weights, host_syncs, link_inputs, run
from glmkit.commands.pretrain import PretrainOptions, run_pretrain

TORCHRUN = Path(sys.executable).parent / "torchrun"
needs_torchrun = pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not installed")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, called_store, embedded_store):
    d = tmp_path_factory.mktemp("train")
    link_inputs(d, called_store, embedded_store)
    return d / "el.zarr", d / "emb.zarr"


def _args(corpus, out, *extra):
    return ["pretrain", corpus[0], "-e", corpus[1], "-o", out, "--preset", "tiny", "--max-steps", "6",
            "--batch-size", "4", "--warmup-steps", "2", "--val-every", "3", "--checkpoint-every", "3",
            "--log-every", "1", "--lr", "1e-3", "--val-fraction", "0.2", "--seed", "5", "--threads", "1", *extra]


def torchrun(args, tmp_path, hook: str = "", processes: int = 2) -> subprocess.CompletedProcess:
    """glmkit's console entry point in ``processes`` processes under torchrun (gloo, CPU). Each rank saves its
    final weights as OUT/rank{r}.pt; ``hook`` (Python) runs first in every worker."""
    out = str(args[args.index("-o") + 1])
    script = tmp_path / f"worker{len(list(tmp_path.glob('worker*.py')))}.py"
    script.write_text("import os, signal, sys\nimport torch\n" + textwrap.dedent(hook) + textwrap.dedent(f"""
        import glmkit.train as train_module
        _train = train_module.Trainer.train
        def _train_and_save(self):
            result = _train(self)
            torch.save(self.model.state_dict(), os.path.join({out!r}, f"rank{{self.rank}}.pt"))
            return result
        train_module.Trainer.train = _train_and_save
        sys.argv = ["glmkit", *{[str(a) for a in args]!r}]
        from glmkit.cli import main
        main()
        """))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(TORCHRUN), "--standalone", "--nproc_per_node", str(processes), str(script)],
                          capture_output=True, text=True, env=env, timeout=600)



def _log(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in (path / "log.tsv").read_text().splitlines()]


# Records every read of genes from the corpus store, by the batch it was for: (step, [[first gene, genes], ...]);
# validation batches have step -1. RECORD_READS(path) writes them as JSON at exit.
RECORD_READS = """
import atexit, json, threading
import glmkit.models.glm.task as glm_task
_batch, _lock, READS = glm_task.GLMTask._batch, threading.Lock(), []
class _Recording:
    def __init__(self, reader):
        self.reader, self.calls = reader, []
    def genes(self, start, n):
        self.calls.append([int(start), int(n)])
        return self.reader.genes(start, n)
def _recorded(self, rows, global_rows, step, reader):
    recording = _Recording(reader)
    result = _batch(self, rows, global_rows, step, recording)
    with _lock:
        READS.append([int(step), recording.calls])
    return result
glm_task.GLMTask._batch = _recorded
def RECORD_READS(path):
    atexit.register(lambda: open(path, "w").write(json.dumps(READS)))
"""


def _reads_by_step(reads: list, steps: int) -> dict:
    """step -> sorted (first gene, genes) of every read for it; training steps beyond ``steps`` (read ahead by the
    prefetcher) left out."""
    out: dict = {}
    for step, calls in reads:
        if step < steps:
            out.setdefault(step, []).extend(map(tuple, calls))
    return {k: sorted(v) for k, v in out.items()}


@needs_torchrun
def test_two_processes_equal_one_process_on_the_same_global_batch(corpus, tmp_path):
    """Gradients really synchronised: 2 processes x 2 rows = 1 process x 4 rows, step by step, to float tolerance;
    both ranks hold identical weights; validation shared out and reduced gives the same figures; rank 0 logs.
    Reads, recorded inside the run: at every step each rank reads its own half of the sub-contigs, and the two
    halves together are what the single process read (training and validation)."""
    import glmkit.models.glm.task as glm_task

    recorder: dict = {}
    exec(RECORD_READS, recorder)   # records this process's reads from here ...
    try:
        one = run(*_args(corpus, tmp_path / "one"), "-q")
    finally:
        glm_task.GLMTask._batch = recorder["_batch"]   # ... to here
    assert one.exit_code == 0, one.stderr
    hook = RECORD_READS + f"RECORD_READS(os.path.join({str(tmp_path / 'two')!r}, "\
                          "f\"reads{os.environ['RANK']}.json\"))\n"
    two = torchrun(_args(corpus, tmp_path / "two"), tmp_path, hook)
    assert two.returncode == 0, two.stderr[-3000:]
    single = _reads_by_step(recorder["READS"], 6)
    ranks = [_reads_by_step(json.loads((tmp_path / "two" / f"reads{r}.json").read_text()), 6) for r in (0, 1)]
    assert sorted(single) == [-1, 0, 1, 2, 3, 4, 5] and all(set(range(6)) <= set(r) for r in ranks)
    for step in single:   # -1: validation, shared out by rows too (a rank may have none of a small split's rows)
        assert sorted(ranks[0].get(step, []) + ranks[1].get(step, [])) == single[step], step
        if step >= 0:     # 4 rows a step: each rank reads its 2 rows' sub-contigs, never the whole step's
            assert all(0 < len(r[step]) < len(single[step]) for r in ranks), step
    a, b = checkpoint_weights(tmp_path / "one"), checkpoint_weights(tmp_path / "two")
    # Adam divides each gradient by its own size, so float-rounding differences in near-zero gradients can move a
    # weight by a fraction of lr (1e-3); unsynchronised gradients (each rank seeing half the batch) move many
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-4, rtol=0, msg=k)
    assert max(float((a[k] - b[k]).abs().mean()) for k in a) < 1e-6
    r0, r1 = torch.load(tmp_path / "two" / "rank0.pt"), torch.load(tmp_path / "two" / "rank1.pt")
    assert all(torch.equal(r0[k], r1[k]) for k in r0)
    log1, log2 = _log(tmp_path / "one"), _log(tmp_path / "two")
    for x, y in zip(log1[1:], log2[1:]):
        assert x[0] == y[0] and float(x[3]) == pytest.approx(float(y[3]), rel=1e-4)       # train loss
        if x[4]:
            assert float(x[4]) == pytest.approx(float(y[4]), rel=1e-4) and x[5] == y[5]   # val loss, accuracy
    assert json.loads((tmp_path / "two" / "checkpoint" / "config.json").read_text())["world_size"] == 2
    assert two.stderr.count("pretrain: step 6:") == 1 and "2 process(es)" in two.stderr


@needs_torchrun
def test_glm2_two_processes_equal_one_process(corpus, tmp_path):
    """gLM2 is a task of the same loop: 2 processes x 2 rows of packed chunks = 1 process x 4 rows."""
    def args(out):
        a = _args(corpus, out, "--arch", "glm2", "--context", "256")
        del a[a.index("-e"):a.index("-e") + 2]
        return a
    one = run(*args(tmp_path / "one"), "-q")
    assert one.exit_code == 0, one.stderr
    two = torchrun(args(tmp_path / "two"), tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = checkpoint_weights(tmp_path / "one"), checkpoint_weights(tmp_path / "two")
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-4, rtol=0, msg=k)
    assert max(float((a[k] - b[k]).abs().mean()) for k in a) < 1e-6
    for x, y in zip(_log(tmp_path / "one")[1:], _log(tmp_path / "two")[1:]):
        assert float(x[3]) == pytest.approx(float(y[3]), rel=1e-4)
        if x[4]:
            assert float(x[4]) == pytest.approx(float(y[4]), rel=1e-4) and x[5] == y[5]


@needs_torchrun
def test_two_processes_killed_and_resumed_equal_an_uninterrupted_run(corpus, tmp_path):
    """Dropout on, 2 processes, both SIGKILLed during step 5: --resume restores every rank's generators and the
    data stream's position; final weights bit-identical, log equal but for throughput."""
    args = _args(corpus, tmp_path / "whole", "--dropout", "0.1")
    assert torchrun(args, tmp_path).returncode == 0
    kill = """
        import glmkit.data.stream as data
        _get, _calls = data.Prefetcher.get, [0]
        def _get_or_die(self):
            _calls[0] += 1
            if _calls[0] == 5:
                os.kill(os.getpid(), signal.SIGKILL)
            return _get(self)
        data.Prefetcher.get = _get_or_die
        """
    args = _args(corpus, tmp_path / "run", "--dropout", "0.1")
    assert torchrun(args, tmp_path, kill).returncode != 0
    assert json.loads((tmp_path / "run" / "checkpoint" / "config.json").read_text())["step"] == 3
    resumed = torchrun([*args, "--resume"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = checkpoint_weights(tmp_path / "whole"), checkpoint_weights(tmp_path / "run")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r[:-3] for r in _log(tmp_path / "whole")] == [r[:-3] for r in _log(tmp_path / "run")]


@needs_torchrun
def test_a_nan_on_one_process_stops_every_process(corpus, tmp_path):
    """A loss that turns NaN on rank 1 only: every process stops (none waits forever in all-reduce), rank 0 says
    why, and the last good checkpoint stays."""
    poison = """
        import glmkit.models.glm.task as glm_task
        _loss, _calls = glm_task.GLMTask.loss, [0]
        def _poisoned(self, model, batch):
            loss, count = _loss(self, model, batch)
            _calls[0] += 1
            if int(os.environ["RANK"]) == 1 and _calls[0] >= 5:
                loss = loss * float("nan")
            return loss, count
        glm_task.GLMTask.loss = _poisoned
        """
    result = torchrun(_args(corpus, tmp_path / "m"), tmp_path, poison)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("glmkit pretrain: error")]
    assert len(errors) == 1 and "loss became NaN or infinite before step 5" in errors[0], result.stderr[-2000:]
    assert json.loads((tmp_path / "m" / "checkpoint" / "config.json").read_text())["step"] == 3


def _options(**kw):
    base = dict(preset="tiny", max_steps=5, batch_size=4, warmup_steps=2, val_every=5, checkpoint_every=5,
                log_every=1, lr=1e-3, val_fraction=0.2, threads=1, seed=2)
    return PretrainOptions(**{**base, **kw})


def test_accumulation_equals_one_step_over_the_same_rows(corpus, tmp_path):
    """--accumulate 2 splits each step's 4 rows into 2 passes: the same gradient (the loss is normalised by the
    step's total count, not each pass's)."""
    run_pretrain([str(corpus[0])], str(corpus[1]), str(tmp_path / "one"), _options())
    run_pretrain([str(corpus[0])], str(corpus[1]), str(tmp_path / "acc"), _options(accumulate=2))
    a, b = checkpoint_weights(tmp_path / "one"), checkpoint_weights(tmp_path / "acc")
    for k in a:  # (tolerances: see the DDP test above)
        torch.testing.assert_close(b[k], a[k], atol=1e-4, rtol=0, msg=k)
    assert max(float((a[k] - b[k]).abs().mean()) for k in a) < 1e-6
    for x, y in zip(_log(tmp_path / "one")[1:], _log(tmp_path / "acc")[1:]):
        assert float(x[3]) == pytest.approx(float(y[3]), rel=1e-5)


def test_fp16_trains_with_a_gradient_scaler_saved_and_restored(corpus, tmp_path, monkeypatch):
    """fp16 (what --precision auto picks on GPUs without bf16) scales the loss; the scaler's state is checkpointed
    and restored on resume. Run on CPU here, where torch's autocast supports fp16 too."""
    import glmkit.models.device as device

    monkeypatch.setattr(device, "resolve_precision", lambda spec, dev: torch.float16)
    import glmkit.train as train_module

    seen = []
    original = train_module.Trainer.save
    monkeypatch.setattr(train_module.Trainer, "save", lambda self, s: (seen.append(self.scaler), original(self, s)))
    run_pretrain([str(corpus[0])], str(corpus[1]), str(tmp_path / "m"), _options(max_steps=3, checkpoint_every=3))
    assert isinstance(seen[0], torch.amp.GradScaler)
    state = torch.load(tmp_path / "m" / "checkpoint" / "training_state.pt", weights_only=True)
    assert state["scaler"]["scale"] > 0 and state["scaler"]["_growth_tracker"] == 3
    run_pretrain([str(corpus[0])], str(corpus[1]), str(tmp_path / "m"), _options(max_steps=5, checkpoint_every=5),
                 resume=True)
    state = torch.load(tmp_path / "m" / "checkpoint" / "training_state.pt", weights_only=True)
    assert state["scaler"]["_growth_tracker"] == 5  # continued from 3, not restarted
    assert all(np.isfinite(v.float().numpy()).all() for v in checkpoint_weights(tmp_path / "m").values())


def test_each_process_gets_its_share_of_the_cpus(monkeypatch):
    from glmkit.resources import available_cpus, resolve_threads

    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert resolve_threads(0) == max(1, available_cpus() // 2)
    assert resolve_threads(1) == 1
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert resolve_threads(0) == available_cpus()


def test_schedules():
    from glmkit.train import LoopOptions, schedule

    linear = schedule(LoopOptions(max_steps=100, warmup_steps=10, schedule="linear"))
    assert linear(0) == pytest.approx(0.1) and linear(9) == 1.0 and linear(55) == pytest.approx(0.5)
    assert linear(100) == 0.0
    cosine = schedule(LoopOptions(max_steps=100, warmup_steps=10, schedule="cosine"))
    assert cosine(10) == 1.0 and cosine(100) == pytest.approx(0.1) and cosine(55) == pytest.approx(0.55)
    constant = schedule(LoopOptions(max_steps=100, warmup_steps=10, schedule="constant"))
    assert constant(5) == pytest.approx(0.6) and constant(99) == 1.0


def test_weight_decay_spares_norms_biases_and_vectors():
    from glmkit.models.glm.model import GLM, preset
    from glmkit.train import parameter_groups

    model = GLM(preset("tiny", input_dim=9, label_dim=5))
    decay, rest = parameter_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.01 and rest["weight_decay"] == 0.0
    assert all(names[id(p)].endswith("weight") for p in decay["params"])
    assert {names[id(p)] for p in rest["params"]} >= {"input_norm.weight", "input_norm.bias", "token_type",
                                                      "blocks.0.output_norm.weight", "blocks.0.intermediate.bias"}


@pytest.mark.slow   # about a minute of compilation on 2 CPU cores
def test_compiled_training_equals_eager(corpus, tmp_path):
    """--compile (torch.compile of the training forward, dynamic shapes) trains the same model: the same losses
    to float tolerance over steps whose rows and masked genes change shape, and a checkpoint that loads as the
    plain model's (no compiled wrapper's names)."""
    run_pretrain([str(corpus[0])], str(corpus[1]), str(tmp_path / "eager"), _options())
    run_pretrain([str(corpus[0])], str(corpus[1]), str(tmp_path / "compiled"), _options(compile_model=True))
    a, b = checkpoint_weights(tmp_path / "eager"), checkpoint_weights(tmp_path / "compiled")
    assert set(a) == set(b)
    assert max(float((a[k] - b[k]).abs().mean()) for k in a) < 1e-6
    losses = [[float(r[3]) for r in _log(tmp_path / d)[1:]] for d in ("eager", "compiled")]
    assert len(losses[0]) == 5 and losses[1] == pytest.approx(losses[0], rel=1e-4)


def _model_input_shapes(monkeypatch, model_class) -> list:
    """Records, per training forward, the shapes of every tensor handed to ``model_class``'s forward."""
    seen, forward = [], model_class.forward

    def recording(self, *args, **kwargs):
        if self.training:
            seen.append(tuple(tuple(a.shape) for a in [*args, *kwargs.values()] if isinstance(a, torch.Tensor)))
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(model_class, "forward", recording)
    return seen


@pytest.mark.parametrize("arch", ["glm", "glm2"])
def test_static_shapes_train_the_same_model_with_one_shape_a_step(corpus, tmp_path, monkeypatch, arch):
    """--static-shapes computes every position (padding too) and weights the loss to the masked genes or tokens:
    each step hands the model tensors of one shape (what CUDA graphs replay), and the run trains the same model
    as the dynamic step's, losses and weights equal to float rounding (no dropout: its draws would differ)."""
    from glmkit.models.glm.model import GLM
    from glmkit.models.glm2.model import GLM2

    extra = dict(subcontig_genes=15, min_subcontig_genes=8) if arch == "glm" else dict(arch="glm2", context=256)
    embeddings = str(corpus[1]) if arch == "glm" else None
    shapes = {}
    for mode in ("dynamic", "static"):
        seen = _model_input_shapes(monkeypatch, GLM if arch == "glm" else GLM2)
        run_pretrain([str(corpus[0])], embeddings, str(tmp_path / mode),
                     _options(max_steps=4, static_shapes=mode == "static", **extra))
        shapes[mode] = set(seen)
        monkeypatch.undo()
    assert len(shapes["static"]) == 1
    assert len(shapes["dynamic"]) > 1       # the dynamic step's shapes change: the check can tell them apart
    a, b = checkpoint_weights(tmp_path / "dynamic"), checkpoint_weights(tmp_path / "static")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5
    losses = [[float(r[3]) for r in _log(tmp_path / d)[1:]] for d in ("dynamic", "static")]
    assert len(losses[0]) == 4 and losses[1] == pytest.approx(losses[0], rel=1e-5)


def test_log_rows_are_appended_not_the_whole_file_rewritten(corpus, tmp_path, monkeypatch):
    """log.tsv is published whole once (header) and then grows a line a row: rewriting it at every row cost time
    quadratic in the rows of a long run logged often."""
    import glmkit.train as train_module

    published = []
    real_replace = os.replace
    monkeypatch.setattr(train_module.os, "replace",
                        lambda a, b: (published.append(Path(b).name), real_replace(a, b))[1])
    assert run(*_args(corpus, tmp_path / "m")).exit_code == 0
    rows = _log(tmp_path / "m")
    assert [r[0] for r in rows[1:]] == [str(s) for s in range(1, 7)] and len({len(r) for r in rows}) == 1
    assert published.count("log.tsv") == 1


def test_read_log_drops_rows_after_the_step_and_a_row_cut_short(tmp_path):
    from glmkit.train import read_log

    log = tmp_path / "log.tsv"
    log.write_text("step\tloss\tseconds\n1\t0.9\t1.0\n2\t0.8\t2.0\n3\t0.7\t3.0\n4\t0.6")  # killed mid-row
    assert read_log(log, 3) == [["1", "0.9", "1.0"], ["2", "0.8", "2.0"], ["3", "0.7", "3.0"]]
    assert read_log(log, 2) == [["1", "0.9", "1.0"], ["2", "0.8", "2.0"]]
    # an older glmkit's log, resumed by one that logs more: rows laid out by column name, the new one empty
    assert read_log(log, 2, ("step", "loss", "baseline", "seconds")) == [["1", "0.9", "", "1.0"],
                                                                         ["2", "0.8", "", "2.0"]]
    log.write_text("step\tloss\tseconds\n1\t0.9\t1.0\n2\t0.8")
    assert read_log(log, 10) == [["1", "0.9", "1.0"]]


# -- what a training step makes the host wait for ------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["glm", "glm2"])
def test_a_training_step_has_no_host_synchronisation(corpus, tmp_path, monkeypatch, arch):
    """From the batch's arrival to the optimiser step (forward, loss, backward, clipping, AdamW) nothing reads a
    tensor's value back or makes a shape from one: on a GPU each such operator stalls the launch queue. torch's
    profiler on CPU sees every operator the GPU would run; before the flat positions came with the batch the gLM's
    step had 2 (aten::nonzero of the real and of the masked genes), gLM2's 3 (boolean indexing by the mask)."""
    from glmkit.train import Trainer

    counted: list = []
    original = Trainer._optimizer_step

    def profiled(self, micro, loss_sum, bad):
        if self.step != 1:
            return original(self, micro, loss_sum, bad)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            result = original(self, micro, loss_sum, bad)
        counted.append({e.name for e in prof.events()})
        counted.append(host_syncs(prof.events()))
        return result

    monkeypatch.setattr(Trainer, "_optimizer_step", profiled)
    els, emb = [str(corpus[0])], str(corpus[1])
    common = dict(max_steps=2, batch_size=4, val_every=10, checkpoint_every=10, log_every=10, threads=1,
                  val_fraction=0.2, grad_clip=1.0)
    if arch == "glm":
        run_pretrain(els, emb, str(tmp_path / "m"), PretrainOptions(preset="tiny", subcontig_genes=15,
                                                                    min_subcontig_genes=8, **common))
    else:
        run_pretrain(els, None, str(tmp_path / "m"), PretrainOptions(arch="glm2", preset="tiny", context=256, **common))
    names, syncs = counted
    assert names & {"aten::addmm", "aten::mm", "aten::linear", "mkldnn::_linear_pointwise"}   # the step was profiled
    assert syncs == []
