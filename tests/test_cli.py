"""The command line: version without heavy imports, pipeline order, examples, error handling."""

from __future__ import annotations

import subprocess
import sys

from conftest import run
from glmkit import __version__
from glmkit.cli import PIPELINE


def test_version_imports_nothing_heavy():
    code = ("import sys; from glmkit.cli import cli\n"
            "try:\n    cli(['--version'])\nexcept SystemExit:\n    pass\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'numpy', 'zarr', 'pyrodigal', 'esm'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == [f"glmkit, version {__version__}", "[]"]


def test_help_lists_subcommands_in_pipeline_order():
    text = run("--help").stdout
    positions = [text.index(f"  {name} ") for name in PIPELINE]
    assert positions == sorted(positions)


def test_each_command_help_has_an_example():
    for name in ("call", "filter"):
        out = run(name, "--help").stdout
        assert "Example:" in out and f"glmkit {name} " in out


def test_quiet_silences_logs(tmp_path, multi_contigs):
    loud = run("call", multi_contigs, "-o", tmp_path / "a.zarr")
    quiet = run("call", multi_contigs, "-o", tmp_path / "b.zarr", "--quiet")
    assert "call: 12 contigs" in loud.stderr and quiet.stderr == ""


def test_debug_shows_traceback(tmp_path):
    (tmp_path / "e.fna").write_text("")
    r = subprocess.run([sys.executable, "-m", "glmkit", "call", str(tmp_path / "e.fna"), "-o",
                        str(tmp_path / "o.zarr"), "--debug"], capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" in r.stderr and "GlmkitError" in r.stderr


def test_examples_script_runs_twice(tmp_path):
    """bin/examples.sh, the README's shell pipeline, runs and can be rerun over its own outputs."""
    import os
    from pathlib import Path

    from conftest import TEST_DATA

    script = Path(__file__).resolve().parent.parent / "bin" / "examples.sh"
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"}
    for _ in range(2):
        r = subprocess.run(["bash", script, TEST_DATA / "messy_contigs.fna.gz", tmp_path / "out"], env=env,
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert "short-subcontig" in r.stdout
    assert (tmp_path / "out" / "subcontigs.zarr").is_dir() and (tmp_path / "out" / "genes.gff").stat().st_size > 0


def test_threads_beyond_the_cpus_are_capped_with_a_note(tmp_path, multi_contigs):
    r = run("call", multi_contigs, "-o", tmp_path / "a.zarr", "--threads", 4096)
    assert r.exit_code == 0 and "--threads 4096: this process may use" in r.stderr


def test_one_meaning_per_flag():
    """-m is --model wherever it exists (Prodigal's -m is glmkit call --mask)."""
    assert "-m," not in run("call", "--help").stdout
    for name in ("embed", "contextualize"):
        assert "-m, --model" in run(name, "--help").stdout


def test_process_wide_settings_do_not_leak_into_a_library_caller(tmp_path, multi_contigs, esm_checkpoint,
                                                                 monkeypatch):
    """glmkit as a library leaves the caller's GC, torch threads and allocator as they were: only glmkit's own
    command-line process (main()) changes process-wide settings."""
    import gc

    import torch

    import glmkit.resources as memory
    from glmkit.commands.call import run_call
    from glmkit.commands.embed import EmbedOptions, run_embed

    calls = []
    monkeypatch.setattr(memory, "keep_freed_memory", lambda: calls.append(1) or True)
    kept = [object() for _ in range(10)]
    gc.freeze()  # the caller froze its own objects
    try:
        frozen = gc.get_freeze_count()
        run_call([str(multi_contigs)], str(tmp_path / "el.zarr"))
        # still frozen (a few frozen objects die meanwhile and leave the count); gc.unfreeze() would make it 0
        assert gc.get_freeze_count() > 0.9 * frozen
    finally:
        gc.unfreeze()
    from threadpoolctl import threadpool_info, threadpool_limits

    import glmkit.commands.embed

    def blas_threads() -> set:
        return {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}

    during = []
    embed_sequences = glmkit.commands.embed.embed_sequences
    monkeypatch.setattr(glmkit.commands.embed, "embed_sequences",
                        lambda *a, **k: during.append((torch.get_num_threads(), blas_threads())) or
                        embed_sequences(*a, **k))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=2, user_api="blas"):  # the caller's own BLAS setting
            run_embed([str(tmp_path / "el.zarr")], str(tmp_path / "emb.zarr"),
                      options=EmbedOptions(model=str(esm_checkpoint[0]), threads=2))
            assert blas_threads() == {2}
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert during and all(d == (2, {1}) for d in during)  # while glmkit computed: its threads, one BLAS thread
    assert calls == [] and kept


def test_every_option_default_and_choice_is_the_one_glmkit_options_declares():
    """Defaults and choices are declared once, in glmkit/options.py (and the families' in the registry): the CLI
    reads them from there, and this fails the day a literal comes back into cli.py and drifts."""
    import dataclasses

    import click

    import glmkit.options as O
    from glmkit.cli import cli
    from glmkit.models.registry import FAMILIES

    commands = {("call",): O.CallOptions, ("genes",): O.GenesOptions, ("filter",): O.FilterOptions, ("embed",): O.EmbedOptions,
                ("pretrain",): O.PretrainOptions, ("contextualize",): O.ContextOptions,
                ("operons", "fit"): O.OperonOptions, ("operons", "predict"): O.OperonOptions,
                ("operons", "eval"): O.OperonOptions, ("paralog-match",): O.ParalogOptions,
                ("jacobian",): O.JacobianOptions, ("dedup", "semantic"): O.SemanticOptions,
                ("dedup", "fit"): O.SemanticOptions, ("dedup", "assign"): O.SemanticOptions,
                ("dedup", "prune"): O.SemanticOptions, ("dedup", "proteins"): O.ProteinOptions,
                ("demo",): O.DemoOptions}
    choices = {"mode": O.MODES, "precision": O.PRECISIONS, "long_mode": O.LONG_MODES, "dtype": O.STORED_DTYPES,
               "arch": tuple(s.key for s in FAMILIES), "recipe": O.RECIPES, "attention_queries": O.ATTENTION_QUERIES,
               "windows": O.WINDOWS, "features": O.KINDS, "level": O.LEVELS, "keep_order": O.KEEP_ORDERS,
               "fast_mode": O.FAST_MODES, "preset": None}
    checked = 0
    for path, options in commands.items():
        command = cli
        for name in path:
            command = command.commands[name]
        fields = {f.name: f for f in dataclasses.fields(options)}
        for param in command.params:
            if not isinstance(param, click.Option):
                continue
            field = fields.get({"long_mode": "long"}.get(param.name, param.name))
            if field is not None and param.name != "threads":   # --threads 0: every CPU; the library's 1
                default = None if param.default in (None, False, ()) or "UNSET" in repr(param.default) \
                    else param.default
                expected = None if field.default in (None, False, ()) else field.default
                if param.multiple and expected is not None:   # --eps: the dataclass's tuple when none is given
                    default = expected if default is None else tuple(default)
                assert default == expected, (path, param.name, param.default, field.default)
                checked += 1
            if isinstance(param.type, click.Choice):
                want = choices.get(param.name)
                if param.name == "preset":
                    want = (tuple(dict.fromkeys(p for s in FAMILIES for p in s.presets)) if path == ("pretrain",)
                            else tuple(O.PROTEIN_PRESETS))
                assert tuple(param.type.choices) == tuple(want), (path, param.name)
    assert checked > 80
