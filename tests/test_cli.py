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


def test_unavailable_commands_say_so():
    r = run("jacobian", "--anything")
    assert r.exit_code == 2 and "not yet available" in r.stderr


def test_quiet_silences_logs(tmp_path, multi_contigs):
    loud = run("call", multi_contigs, "-o", tmp_path / "a.zarr")
    quiet = run("call", multi_contigs, "-o", tmp_path / "b.zarr", "--quiet")
    assert "call: 12 contigs" in loud.stderr and quiet.stderr == ""


def test_debug_shows_traceback(tmp_path):
    (tmp_path / "e.fna").write_text("")
    r = subprocess.run([sys.executable, "-m", "glmkit", "call", str(tmp_path / "e.fna"), "-o",
                        str(tmp_path / "o.zarr"), "--debug"], capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" in r.stderr and "GlmkitError" in r.stderr
