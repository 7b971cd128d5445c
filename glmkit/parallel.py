"""Work spread over threads, results in order: for the parts of glmkit whose calls release the GIL (torch, numpy
and faiss kernels) and are each too small to keep several cores busy on their own."""

from __future__ import annotations

import contextlib
import os


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
