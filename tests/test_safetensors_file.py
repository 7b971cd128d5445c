"""glmkit/io/safetensors_file.py: the same tensors and metadata give the same bytes; a failed write is an OSError."""

from __future__ import annotations

import errno
import hashlib
import resource
import signal

import numpy as np
import pytest
import torch
from safetensors import safe_open

from glmkit.io.safetensors_file import save_safetensors


def test_the_same_content_gives_the_same_bytes_and_reads_back(tmp_path):
    meta = {f"key{i}": f"value {i}" for i in range(12)}   # safetensors alone orders these at random
    digests = set()
    for k in range(5):
        save_safetensors({"b": np.arange(3.0), "a": np.ones((2, 2))}, tmp_path / f"{k}.st", meta)
        digests.add(hashlib.sha256((tmp_path / f"{k}.st").read_bytes()).hexdigest())
    assert len(digests) == 1
    with safe_open(str(tmp_path / "0.st"), "np") as fh:
        assert fh.metadata() == meta and np.array_equal(fh.get_tensor("b"), np.arange(3.0))
    save_safetensors({"w": torch.ones(2)}, tmp_path / "t.st")   # torch tensors too
    with safe_open(str(tmp_path / "t.st"), "pt") as fh:
        assert torch.equal(fh.get_tensor("w"), torch.ones(2))


def test_a_write_the_disk_refuses_is_an_oserror_with_its_errno(tmp_path):
    """safetensors raises its own SafetensorError, which the commands' full-disk message did not catch."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))   # as a full disk: the write fails part way
    try:
        with pytest.raises(OSError) as caught:
            save_safetensors({"a": np.zeros(100_000)}, tmp_path / "big.st")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert caught.value.errno == errno.EFBIG and caught.value.filename == str(tmp_path / "big.st")
