"""Logging and progress: everything here goes to stderr.

Data goes to files or stdout; messages to stderr. Progress is a bar on a
terminal and, where stderr is a file or a pipe (Slurm, nohup, Snakemake), a
line every ``GLMKIT_PROGRESS_SECONDS`` seconds (default 30) with the count, the
rate and the time left. ``--quiet`` leaves only errors.
"""

from __future__ import annotations

import logging
import os
import sys
import time

logger = logging.getLogger("glmkit")
_quiet = False
DEFAULT_INTERVAL = 30.0  # seconds between progress lines off a terminal


def setup(quiet: bool = False, debug: bool = False) -> None:
    global _quiet
    _quiet = quiet
    level = logging.ERROR if quiet else (logging.DEBUG if debug else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False


def plural(n: int, word: str, words: str | None = None) -> str:
    """'1 contig', '2 contigs', '1,000 IGS': a count with its noun agreeing."""
    return f"{n:,} {word if n == 1 else (words or word + 's')}"


def _interval() -> float:
    try:
        return max(0.0, float(os.environ.get("GLMKIT_PROGRESS_SECONDS", DEFAULT_INTERVAL)))
    except ValueError:
        return DEFAULT_INTERVAL


def _count(n: float, unit: str) -> str:
    if unit == "bp":
        for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
            if n >= scale:
                return f"{n / scale:.1f} {prefix}bp"
        return f"{n:.0f} bp"
    return f"{n:,.0f} {unit}"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class _Lines:
    """Progress as log lines at a steady interval, for logs that are not a terminal."""

    def __init__(self, total, desc: str, unit: str, interval: float, initial: float = 0):
        self.total, self.desc, self.unit, self.interval = total, desc, unit, interval
        self.n = self.initial = initial  # initial: done before this run (a resumed job); not in the rate
        self.started = self.last = time.monotonic()

    def update(self, n: float = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            logger.info(self.line(now))

    def line(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        rate = (self.n - self.initial) / elapsed
        if self.total:
            done = f"{self.n:,.0f}" if self.unit != "bp" else _count(self.n, self.unit)
            text = f"{self.desc}: {done} of {_count(self.total, self.unit)} ({100 * self.n / self.total:.1f} %)"
        else:
            text = f"{self.desc}: {_count(self.n, self.unit)}"
        text += f", {_count(rate, self.unit)}/s"
        if self.total and rate > 0:
            text += f", {_duration((self.total - self.n) / rate)} left"
        return text + f" ({_duration(elapsed)} elapsed)"

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Silent(_Lines):
    def update(self, n: float = 1) -> None:
        self.n += n


class _Bar:
    """A tqdm bar, with glmkit's log lines written above it rather than through it."""

    def __init__(self, **kwargs):
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        self._redirect = logging_redirect_tqdm(loggers=[logger], tqdm_class=tqdm)
        self._redirect.__enter__()
        self._bar = tqdm(**kwargs)

    def update(self, n: float = 1) -> None:
        self._bar.update(n)

    def close(self) -> None:
        self._bar.close()
        self._redirect.__exit__(None, None, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(*, total=None, desc: str = "", unit: str = "it", initial: float = 0, enabled: bool = True):
    """The one progress reporter: a tqdm bar on a terminal, periodic lines elsewhere, nothing with ``--quiet``.

    Use as a context manager and call ``update(n)``. ``initial``: work done before this run (a resumed job).
    ``enabled=False`` (e.g. on all but one process of a distributed run) reports nothing.
    """
    if _quiet or not enabled or not logger.isEnabledFor(logging.INFO):
        return _Silent(total, desc, unit, 0, initial)
    if sys.stderr.isatty():
        try:  # a terminal that reports no size (some containers) would get an empty bar
            sized = os.get_terminal_size(sys.stderr.fileno()).columns > 0
        except (OSError, ValueError):
            sized = False
        return _Bar(total=total, desc=desc, unit=f" {unit}", initial=initial, file=sys.stderr, dynamic_ncols=sized,
                    ncols=None if sized else 80, smoothing=0.1, unit_scale=unit == "bp")
    return _Lines(total, desc, unit, _interval(), initial)
