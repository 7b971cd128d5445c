"""glibc's allocator: the settings glmkit's own command-line process runs with, and handing a finished phase's
memory back. Off glibc (macOS, musl) both do nothing."""

from __future__ import annotations

import logging


def _libc():
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def keep_freed_memory(one_arena: bool = True) -> bool:
    """Ask glibc to reuse freed activation buffers instead of returning them to the OS, from one heap; True if it
    agreed.

    By default glibc serves allocations over 32 MiB with mmap and unmaps them on
    free, so every forward pass page-faults its large activations anew (see
    bench/tricks.py malloc). Kept buffers are only bounded if every thread
    allocates from the same heap: zarr's and torch's threads would each grow a
    heap of their own (an arena), whose freed memory no other thread reuses; one
    arena (M_ARENA_MAX; ``one_arena``) keeps contextualize at 10^6 genes at
    530 MB instead of 750 (bench/tricks.py arenas). Same effect as the MALLOC_* environment
    variables; no-op off glibc. Process-wide and permanent (glibc cannot report
    the previous values to restore), so only glmkit's own command-line process
    calls it (glmkit.cli.main), never a library caller's.
    """
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is None:
        return False
    M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -2, -3, -8
    # the largest mmap threshold glibc accepts is HEAP_MAX/2 (32 MiB on 32-bit, 32 MiB x 2 on 64-bit builds vary):
    # try 1 GiB, then smaller
    agreed = any(mallopt(M_MMAP_THRESHOLD, size) == 1 for size in (1 << 30, 1 << 25))
    agreed = agreed and mallopt(M_TRIM_THRESHOLD, (1 << 31) - 1) == 1 and mallopt(M_TOP_PAD, 256 << 20) == 1
    agreed = agreed and (not one_arena or mallopt(M_ARENA_MAX, 1) == 1)
    if not agreed:
        logging.getLogger("glmkit").debug("glibc refused the malloc settings; freed buffers go back to the OS")
    return agreed


def release_freed_memory() -> None:
    """Hand memory freed by a finished phase (a corpus build's index and buffers, a dedup step's) back to the OS
    (glibc malloc_trim), so that one phase's transient buffers do not stay in the process's RSS for the next; under
    keep_freed_memory glibc would keep them for the rest of the process. Changes no setting, so a library caller
    may have it too; no-op off glibc."""
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is not None:
        trim(0)
