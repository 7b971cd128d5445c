"""The rules docs/ARCHITECTURE.md states, checked on the source so they go on holding."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import glmkit
from glmkit.models import registry

PACKAGE = Path(glmkit.__file__).parent


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside functions (relative imports resolved)."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base]).strip(".")
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def modules_under(folder: str) -> list[Path]:
    return sorted(p for p in (PACKAGE / folder).rglob("*.py") if p.name != "__init__.py")


@pytest.mark.parametrize("path", modules_under("commands"), ids=lambda p: p.stem)
def test_commands_never_import_commands(path):
    others = {f"glmkit.commands.{p.stem}" for p in modules_under("commands")} - {f"glmkit.commands.{path.stem}"}
    assert not imported_modules(path) & others


@pytest.mark.parametrize("path", modules_under("genome") + modules_under("io"), ids=lambda p: p.stem)
def test_genome_biology_and_formats_never_import_the_layers_above(path):
    above = ("glmkit.commands", "glmkit.pipeline", "glmkit.cli")
    assert not [m for m in imported_modules(path) if m.startswith(above)]


@pytest.mark.parametrize("path", modules_under("genome"), ids=lambda p: p.stem)
def test_genome_is_torch_free(path):
    assert not [m for m in imported_modules(path) if m == "torch" or m.startswith("torch.")]


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("models/*/model.py")), ids=lambda p: p.parent.name)
def test_model_files_are_architecture_only(path):
    """A model.py imports torch, the shared layers and its own tokens; never a loader, a store or a command."""
    allowed = ("torch", "glmkit.models.layers", f"glmkit.models.{path.parent.name}.tokens", "glmkit.errors")
    own = [m for m in imported_modules(path) if m.startswith("glmkit") or m.startswith("torch")]
    assert all(m.startswith(allowed) for m in own), own


def test_every_family_is_one_folder_behind_the_registry():
    for spec in registry.FAMILIES:
        folder = PACKAGE.parent.joinpath(*spec.package.split("."))
        assert folder.parent == PACKAGE / "models" and (folder / "model.py").is_file(), spec.package
        assert registry.family(spec.key) is spec
        assert registry.BY_ARCHITECTURE[spec.architecture] is spec
