"""Stopping on SIGINT and SIGTERM: cleanly, with a resumable state, saying so.

Cluster schedulers send SIGTERM before they kill a job (preemption, time
limit); Ctrl-C sends SIGINT. The CLI (only the CLI: a library caller keeps its
own handlers) turns both into ``Stopped``, a KeyboardInterrupt, so that every
``finally`` and atomic-output cleanup runs. Code that must not be interrupted
half-way (a training step and its checkpoint) runs inside ``deferred()`` and
polls ``requested()`` at a safe point instead. The CLI prints one line: the
signal, and how to resume (``hint``).
"""

from __future__ import annotations

import contextlib
import signal

_deferred = 0
_pending: int | None = None


class Stopped(KeyboardInterrupt):
    def __init__(self, signum: int, hint: str = ""):
        super().__init__(signum, hint)
        self.signum, self.hint = signum, hint

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


def _handler(signum, frame) -> None:
    global _pending
    if _deferred:
        _pending = signum
        return
    raise Stopped(signum)


def install() -> None:
    """SIGINT and SIGTERM raise Stopped (for the command-line process only)."""
    signal.signal(signal.SIGINT, _handler)
    signal.signal(signal.SIGTERM, _handler)


def requested() -> int | None:
    """The signal received inside ``deferred()``, if any."""
    return _pending


@contextlib.contextmanager
def deferred():
    """Within: a stop signal is only noted (see ``requested``); the code stops at its next safe point."""
    global _deferred, _pending
    _deferred += 1
    try:
        yield
    finally:
        _deferred -= 1
        if not _deferred:
            _pending = None


def with_hint(error: BaseException, hint: str) -> BaseException:
    """``error`` (a Stopped or a KeyboardInterrupt) as a Stopped that says how to resume."""
    signum = error.signum if isinstance(error, Stopped) else signal.SIGINT
    return Stopped(signum, hint)
