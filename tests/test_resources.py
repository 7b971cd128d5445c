"""glmkit.resources: glibc keeps freed buffers for glmkit's own process, and gives a finished phase's back."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

CHILD = """
import numpy as np
from glmkit.resources import keep_freed_memory, release_freed_memory

def rss():
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS")) // 1024

assert keep_freed_memory()
base = rss()
arrays = [np.ones(1 << 17) for _ in range(300)]   # 300 MB in 1 MiB buffers: heap, not mmap, under the setting
del arrays
kept = rss()
release_freed_memory()
print(base, kept, rss())
"""


@pytest.mark.skipif(platform.system() != "Linux" or not platform.libc_ver()[0] == "glibc", reason="glibc only")
def test_freed_buffers_are_kept_until_released():
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True)
    base, kept, released = map(int, out.stdout.split())
    assert kept - base > 250      # kept: glibc returned nothing on free
    assert released - base < 50   # released: handed back by malloc_trim

