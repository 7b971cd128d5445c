"""Work spread over threads, results in order: for the parts of glmkit whose calls release the GIL (torch, numpy
and faiss kernels) and are each too small to keep several cores busy on their own."""

from __future__ import annotations


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
