"""Every malformed input of tests/bad_inputs/cases.py: one clear line, no traceback, nothing written.

Each runs with --quiet, which silences everything but errors. For each case: the exit status is non-zero (2 for usage errors), stderr is one
line that names the file (or option) and the problem, there is no traceback and
no "internal error", and no path in the case's folder is created, removed or
modified (inputs included).
"""

from __future__ import annotations

import os

import pytest

from bad_inputs.cases import CASES, build_base
from conftest import run


@pytest.fixture(scope="session")
def base(tmp_path_factory):
    return build_base(tmp_path_factory.mktemp("bad_inputs_base"))


def snapshot(folder):
    """Every path under ``folder`` with its size and modification time (folders: their listing)."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(root, name)
            info = os.lstat(path)
            out[os.path.relpath(path, folder)] = (info.st_size if name in files else None, info.st_mtime_ns)
    return out


def test_there_are_enough_cases():
    assert len(CASES) >= 60
    assert len({c.name for c in CASES}) == len(CASES)
    commands = {c.name.split("-")[0] for c in CASES}
    assert commands >= {"call", "filter", "embed", "pretrain", "contextualize", "validate"}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case, base, tmp_path, monkeypatch):
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    args = case.build(tmp_path, base)
    before = snapshot(tmp_path)
    result = run(*args, "-q")  # --quiet: errors only (progress and summaries are not under test)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == case.status, (result.exit_code, result.stderr)
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr
    for fragment in case.fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert snapshot(tmp_path) == before, "the run created, removed or modified files"
