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


def provenance(parameters: dict, **extra) -> dict:
    """What every output records of how it was made: glmkit's version, the command line, the parameters (and
    whatever the caller adds: inputs, the external tools that ran)."""
    from glmkit import __version__

    return {"glmkit_version": __version__, "command_line": command_line(), "parameters": parameters, **extra}
