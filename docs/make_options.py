#!/usr/bin/env python3
"""Write each command page's options table from the command itself, so the pages cannot drift from --help.

    python docs/make_options.py          # rewrite the tables in docs/commands/*.md
    python docs/make_options.py --check  # exit 1 if any is out of date (tests/test_docs.py does this)

A page marks where a table goes with ``<!-- options: COMMAND [SUBCOMMAND] -->`` and ``<!-- /options -->``;
everything between them is replaced by a table of click's own help records (the text --help shows).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import click

PAGES = Path(__file__).resolve().parent / "commands"
MARKED = re.compile(r"(<!-- options: ([a-z\- ]+) -->\n)(.*?)(<!-- /options -->)", re.S)


def options_table(words: list[str]) -> str:
    from glmkit.cli import cli

    command, ctx = cli, click.Context(cli, info_name="glmkit")
    for word in words:
        command = command.get_command(ctx, word)
        ctx = click.Context(command, info_name=word, parent=ctx)
    rows = ["| Option | What it sets |", "|---|---|"]
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None or isinstance(param, click.Argument) or "--help" in param.opts \
                or param.name in ("debug", "quiet"):
            continue
        opts, text = (s.replace("|", "\\|").replace("\n", " ") for s in record)
        rows.append(f"| `{opts}` | {text} |")
    arguments = [p.human_readable_name for p in command.params if isinstance(p, click.Argument)]
    usage = f"`glmkit {' '.join(words)} [OPTIONS] {' '.join(arguments)}`".replace(" ]", "]")
    return "\n".join([usage + " (also `--debug`, `-q/--quiet`, `-h/--help`)", "", *rows]) + "\n"


def rendered(text: str) -> str:
    return MARKED.sub(lambda m: m.group(1) + "\n" + options_table(m.group(2).split()) + "\n" + m.group(4), text)


def main(check: bool) -> int:
    stale = []
    for page in sorted(PAGES.glob("*.md")):
        text = page.read_text()
        new = rendered(text)
        if new != text:
            stale.append(page.name)
            if not check:
                page.write_text(new)
    if check and stale:
        print(f"out of date: {', '.join(stale)}; run python docs/make_options.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main("--check" in sys.argv[1:]))
