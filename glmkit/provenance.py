"""The command line being run, recorded by the CLI for every store it writes (kept import-light)."""

from __future__ import annotations

import shlex
import sys

_command_line: str | None = None


def set_command_line(args) -> None:
    global _command_line
    _command_line = shlex.join(["glmkit", *map(str, args)])


def command_line() -> str:
    return _command_line or shlex.join(["glmkit", *sys.argv[1:]])
