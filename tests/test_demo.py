"""glmkit demo: the README's first command, on the genomes shipped with pyrodigal."""

from conftest import assert_one_line_error, run
from glmkit.io.elements import ElementStore


def test_demo_runs_every_available_stage(tmp_path):
    out = tmp_path / "demo"
    r = run("demo", out)
    assert r.exit_code == 0, r.stderr
    elements, sub = ElementStore(out / "elements.zarr"), ElementStore(out / "subcontigs.zarr")
    assert elements.n_contigs == 3 and elements.attrs["stats"]["cds"] == (out / "proteins.faa").read_text().count(">")
    counts = sub.read()
    cds_per_subcontig = [int((counts.elements["type"][a:b] == 0).sum())
                         for a, b in zip(counts.offsets[:-1], counts.offsets[1:])]
    assert cds_per_subcontig and all(15 <= n <= 30 for n in cds_per_subcontig)
    assert_one_line_error(run("demo", out), "not empty", "--force")
    assert run("demo", out, "--force", "-q").exit_code == 0
