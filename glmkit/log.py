"""Logging and progress bars: everything here goes to stderr.

Data goes to files or stdout; messages to stderr. Progress bars appear only
on a terminal, and ``--quiet`` leaves only errors.
"""

from __future__ import annotations

import logging
import sys

logger = logging.getLogger("glmkit")
_quiet = False


def setup(quiet: bool = False, debug: bool = False) -> None:
    global _quiet
    _quiet = quiet
    level = logging.ERROR if quiet else (logging.DEBUG if debug else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False


def progress(iterable=None, *, total=None, desc: str = "", unit: str = "it"):
    """A tqdm bar on stderr when stderr is a terminal and not ``--quiet``."""
    from tqdm import tqdm

    disable = _quiet or not sys.stderr.isatty()
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable,
                file=sys.stderr, dynamic_ncols=True, smoothing=0.1)
