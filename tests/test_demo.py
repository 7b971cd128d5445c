"""glmkit demo: the README's first command, on the genomes shipped with pyrodigal."""

from conftest import assert_one_line_error, run
from glmkit.demo import PICTURES
from glmkit.io.elements import ElementStore

STAGES = ("call", "filter", "embed", "pretrain gLM", "contextualize", "operons (synthetic corpus)",
          "paralog-match (synthetic corpus)", "jacobian", "dedup semantic", "dedup proteins", "pretrain gLM2")


def test_demo_quick_runs_every_stage_and_shows_them(tmp_path):
    out = tmp_path / "demo"
    r = run("demo", out, "--quick", "--threads", "1")
    assert r.exit_code == 0, r.stderr
    elements, sub = ElementStore(out / "elements.zarr"), ElementStore(out / "subcontigs.zarr")
    assert elements.n_contigs == 3 and elements.attrs["stats"]["cds"] == (out / "proteins.faa").read_text().count(">")
    counts = sub.read()
    cds_per_subcontig = [int((counts.elements["type"][a:b] == 0).sum())
                         for a, b in zip(counts.offsets[:-1], counts.offsets[1:])]
    assert cds_per_subcontig and all(15 <= n <= 30 for n in cds_per_subcontig)
    rows = [line.split("\t") for line in (out / "summary.tsv").read_text().splitlines()[1:]]
    assert tuple(row[0] for row in rows) == STAGES
    assert all(float(row[2]) >= 0 and row[3] for row in rows)
    assert rows[0][3] == f"{elements.attrs['stats']['cds']:,} genes in 3 genomes"
    page = (out / "index.html").read_text()
    for title, picture in PICTURES:
        assert (out / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", picture
        assert f"src='{picture}'" in page
    assert all(stage in page for stage in STAGES) and "random-weight ESM2" in page
    for stage in STAGES:   # the table is also in the log
        assert stage in r.stderr
    assert_one_line_error(run("demo", out), "not empty", "--force")
