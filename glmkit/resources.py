"""The machine's resources, one place for all of them: CPUs (threads per process, the launcher's process counts),
thread pools (numpy's BLAS per block, work spread over threads in order) and glibc's allocator (the CLI's
setting, handing a finished phase's memory back). Off glibc (macOS, musl) the allocator calls do nothing."""

from __future__ import annotations

import contextlib
import logging
import os


# -- CPUs and processes ----------------------------------------------------------------------------------------

def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))  # respects cgroup/cpuset limits on cluster nodes
    except AttributeError:
        return os.cpu_count() or 1


def resolve_threads(requested: int) -> int:
    """0: this process's share of the CPUs it may use (under torchrun, shared among the node's processes); more
    than the CPUs is capped, with a note (oversubscription only slows)."""
    cpus = available_cpus()
    local_processes = max(1, launcher_int("LOCAL_WORLD_SIZE", 1))
    if requested > cpus:
        logging.getLogger("glmkit").info(f"--threads {requested}: this process may use {cpus} CPUs; using {cpus}")
        return cpus
    return requested or max(1, cpus // local_processes)


def launcher_int(name: str, default: int) -> int:
    """An integer that a launcher (torchrun, Slurm) sets in the environment: unset or empty is ``default``;
    anything else but a non-negative integer is one line naming the variable."""
    from glmkit.errors import GlmkitUsageError

    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if not value.isdigit():
        raise GlmkitUsageError(f"{name}={os.environ[name]!r} in the environment is not a number of processes; "
                               f"unset it, or run under torchrun, which sets it")
    return int(value)


# -- thread pools ---------------------------------------------------------------------------------------------

@contextlib.contextmanager
def one_blas_thread():
    """numpy's BLAS on one thread for a block, then put back (a library caller keeps its own setting).

    Wherever glmkit computes in parallel it spreads the work itself (torch's threads, or ``ordered_map``), and
    numpy's products run beside that work: a second BLAS team would take the cores the first one waits on
    (OpenBLAS's idle workers spin), and a product of fixed shape on one thread gives the same bits for any
    thread count."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


def ordered_map(func, items, threads: int):
    """``func`` over ``items`` on ``threads`` threads, results in order, at most 2 x threads items in flight."""
    if threads <= 1:
        yield from map(func, items)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads) as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(func, item))
            if len(pending) >= 2 * threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


# -- glibc's allocator ----------------------------------------------------------------------------------------


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
