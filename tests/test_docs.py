"""The docs cannot drift from the code: every `glmkit` command line in a sh block of the Markdown names a real
subcommand, and every long option it passes is one that subcommand's --help lists.

(Executing every example needs their inputs — real assemblies, published weights, GPUs; the demo and the
workflow tests run the pipeline for real. This checks what drifts most: names of commands and options.)
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from conftest import run

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
GROUPS = {"dedup": {"semantic", "fit", "assign", "prune", "merge", "proteins"}, "operons": {"fit", "predict", "eval"}}


def command_lines(page: Path) -> list[str]:
    lines, joined = [], ""
    for block in re.findall(r"```(?:sh|bash)\n(.*?)```", page.read_text(), re.S):
        for raw in block.splitlines():
            line = raw.split(" #")[0].rstrip() if not raw.lstrip().startswith("#") else ""
            joined = joined + " " + line.rstrip("\\").strip() if joined else line.rstrip("\\").strip()
            if line.endswith("\\"):
                continue
            lines.extend(part.strip() for part in re.split(r"&&|\|", joined) if "glmkit " in part)
            joined = ""
    return lines


EXAMPLES = [(page.name, line) for page in PAGES for line in command_lines(page)]


def test_the_docs_have_examples():
    assert len(EXAMPLES) > 40


@pytest.mark.parametrize("page,line", EXAMPLES, ids=[f"{p}:{i}" for i, (p, _) in enumerate(EXAMPLES)])
def test_documented_command_exists_with_its_options(page, line):
    words = shlex.split(line[line.index("glmkit "):].replace("$(", "").replace(")", ""), posix=True)
    words = words[1:]
    if not words or words[0].startswith("-"):
        return   # glmkit --version and the like
    command = words[:2] if words[0] in GROUPS and len(words) > 1 and words[1] in GROUPS[words[0]] else words[:1]
    result = run(*command, "--help")
    assert result.exit_code == 0, f"{page}: `glmkit {' '.join(command)}` is not a command"
    for option in (w.split("=")[0] for w in words if w.startswith("--")):
        assert option in result.stdout, f"{page}: `glmkit {' '.join(command)}` has no option {option}"
