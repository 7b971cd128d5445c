"""`glmkit demo`: the pipeline end to end on genomes that ship inside the pyrodigal wheel.

No download and no ../shared: a fresh install can run it at once. It runs each
available stage in pipeline order and leaves its outputs in one folder.
"""

from __future__ import annotations

import contextlib
import logging
from importlib.resources import as_file, files
from pathlib import Path

from glmkit.call import CallOptions, run_call
from glmkit.errors import GlmkitError
from glmkit.filter import FilterOptions, run_filter

log = logging.getLogger("glmkit")

# A metagenomic SPAdes contig, a 20 kb scaffold and an 870 kb draft contig, each a real assembly.
DEMO_GENOMES = ("SRR492066.fna.gz", "KK037166.fna.gz", "MIIJ01000039.fna.gz")


def run_demo(outdir: str, threads: int = 1, force: bool = False) -> dict[str, Path]:
    out = Path(outdir)
    if out.exists() and any(out.iterdir()) and not force:
        raise GlmkitError(f"{outdir}: folder exists and is not empty; use --force to overwrite its demo outputs")
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in ("elements.zarr", "genes.gff", "proteins.faa", "filtered.zarr",
                                           "filter_report.tsv", "subcontigs.zarr", "subcontigs_report.tsv")}
    data = files("pyrodigal.tests") / "data"
    with contextlib.ExitStack() as stack:
        inputs = [str(stack.enter_context(as_file(data / name))) for name in DEMO_GENOMES]
        log.info(f"demo: calling genes in {', '.join(DEMO_GENOMES)} (shipped with pyrodigal)")
        run_call(inputs, str(paths["elements.zarr"]), gff=str(paths["genes.gff"]),
                 proteins=str(paths["proteins.faa"]), options=CallOptions(threads=threads), force=force)
    log.info("demo: OMG quality rules")
    run_filter(str(paths["elements.zarr"]), str(paths["filtered.zarr"]), report=str(paths["filter_report.tsv"]),
               force=force)
    log.info("demo: gLM sub-contigs of 15-30 genes")
    run_filter(str(paths["elements.zarr"]), str(paths["subcontigs.zarr"]), report=str(paths["subcontigs_report.tsv"]),
               options=FilterOptions(glm_subcontigs=True), force=force)
    log.info(f"demo: outputs in {out}/: " + ", ".join(paths))
    return paths
