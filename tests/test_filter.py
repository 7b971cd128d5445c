"""glmkit filter: each OMG rule and its boundary, on contigs built by hand, element by element."""

from __future__ import annotations

import json

import zarr

from conftest import assert_one_line_error, build_store, cds, igs, no_leftovers, run
from glmkit.commands.filter import FilterOptions, run_filter
from glmkit.io.elements import ElementStore
from glmkit.io.store import SCHEMAS


def _filter(tmp_path, contigs, *args):
    src = build_store(tmp_path / "in.zarr", contigs)
    out, report = tmp_path / "out.zarr", tmp_path / "report.tsv"
    result = run("filter", src, "-o", out, "-r", report, *args)
    assert result.exit_code == 0, result.stderr
    batch = ElementStore(out).read()
    pieces = [list(batch.elements["id"][a:b]) for a, b in zip(batch.offsets[:-1], batch.offsets[1:])]
    rows = [line.split("\t") for line in report.read_text().splitlines()]
    assert rows[0] == ["contig", "element_id", "type", "start", "end", "strand", "rule", "action"]
    events = {(r[1], r[6], r[7]) for r in rows[1:]}
    return pieces, events, batch, result


def alternating(n_cds: int, first_igs: bool = False, last_igs: bool = False, **cds_kw) -> list[dict]:
    """CDS separated by IGS: the ordinary shape of a contig."""
    out = [igs()] if first_igs else []
    for k in range(n_cds):
        out.append(cds(**cds_kw))
        if k < n_cds - 1:
            out.append(igs())
    return out + ([igs()] if last_igs else [])


def ids(name, n_cds, first_igs=False):
    """Element ids build_store gives to alternating(n_cds)."""
    out = [f"{name}_igs0"] if first_igs else []
    for k in range(1, n_cds + 1):
        out.append(f"{name}_{k}")
        if k < n_cds:
            out.append(f"{name}_igs{k}")
    return out


def test_contig_length_boundary(tmp_path):
    pieces, events, batch, _ = _filter(tmp_path, [("a", 1999, alternating(5)), ("b", 2000, alternating(5))])
    assert pieces == [ids("b", 5)]
    assert batch.contigs["source"].tolist() == ["b"]
    assert {e for e in events if e[0].startswith("a")} == {(i, "short-contig", "removed") for i in ids("a", 5)}


def test_edges_interrupted_cds_and_igs(tmp_path):
    contigs = [
        # starts with a partial CDS, ends with a complete CDS: only the first goes
        ("p", 5000, [cds(partial_left=True)] + alternating(5)[1:]),
        # starts with IGS: IGS and the next CDS go; ends with a partial CDS: it goes
        ("q", 5000, alternating(6, first_igs=True)[:-1] + [cds(partial_right=True)]),
        # ends with IGS: IGS and the CDS before it go
        ("r", 5000, alternating(6, last_igs=True)),
    ]
    pieces, events, _, _ = _filter(tmp_path, contigs, "--min-elements", 1, "--min-cds", 1)
    assert pieces == [ids("p", 5)[1:], ids("q", 6, first_igs=True)[2:-1], ids("r", 6)[:-1]]
    assert events == {("p_1", "edge-cds", "removed"), ("q_igs0", "edge-igs", "removed"),
                      ("q_1", "edge-igs", "removed"), ("q_6", "edge-cds", "removed"),
                      ("r_igs6", "edge-igs", "removed"), ("r_6", "edge-igs", "removed")}


def test_keep_edges_option(tmp_path):
    pieces, events, _, _ = _filter(tmp_path, [("q", 5000, alternating(6, first_igs=True))], "--keep-edges")
    assert pieces == [ids("q", 6, first_igs=True)] and events == set()


def test_invalid_character_boundary_splits(tmp_path):
    ok_igs = igs(nt=b"NN" + b"A" * 8)          # exactly 20 % N: kept
    bad_igs = igs(nt=b"NNN" + b"A" * 7)        # 30 %: removed, split
    ok_cds = cds(aa=b"XX" + b"M" * 8)          # exactly 20 % X
    bad_cds = cds(aa=b"XXX" + b"M" * 7)
    elements = (alternating(4) + [ok_igs] + alternating(4) + [bad_igs] + alternating(4) + [igs(), ok_cds, igs(),
                bad_cds, igs()] + alternating(4))
    pieces, events, _, _ = _filter(tmp_path, [("c", 9000, elements)], "--keep-edges")
    assert {e[1] for e in events} == {"invalid-characters"}
    assert ("c_igs8", "invalid-characters", "removed") in events   # the 30 % N IGS
    assert ("c_14", "invalid-characters", "removed") in events     # the 30 % X CDS
    assert len(pieces) == 3
    assert pieces[0][0] == "c_1" and pieces[0][-1] == "c_8"        # the 20 % N IGS (c_igs4) stays inside
    assert "c_igs4" in pieces[0] and "c_13" in pieces[1]             # the 20 % X CDS stays


def test_long_elements_boundary(tmp_path):
    elements = (alternating(3) + [igs(nt=b"A" * 4000)] + alternating(3) + [igs(nt=b"A" * 4001)] + alternating(3)
                + [igs(), cds(aa=b"M" * 15000), igs(), cds(aa=b"M" * 15001), igs()] + alternating(4))
    pieces, events, _, _ = _filter(tmp_path, [("c", 200000, elements)], "--keep-edges")
    assert ("c_igs6", "long-igs", "removed") in events
    assert ("c_11", "long-cds", "removed") in events
    assert not any(e[0] in ("c_igs3", "c_10") for e in events)   # exactly 4,000 bp and 15,000 aa stay
    assert [p[0] for p in pieces] == ["c_1", "c_7", "c_igs11"]
    assert "c_10" in pieces[1]


def test_element_and_cds_count_boundaries(tmp_path):
    contigs = [
        ("seven", 5000, alternating(4)),                    # 7 elements, 4 CDS: kept
        ("six", 5000, alternating(3) + [igs()]),            # 6 elements: dropped
        ("twocds", 5000, [igs()] + alternating(2) + [igs(), igs(), igs()]),  # 7 elements, 2 CDS: dropped
        ("threecds", 5000, [igs(), igs()] + alternating(3)),  # 7 elements, 3 CDS: kept
    ]
    pieces, events, _, _ = _filter(tmp_path, contigs, "--keep-edges")
    assert [p[0].rsplit("_", 1)[0] for p in pieces] == ["seven", "threecds"]
    assert {e[1] for e in events if e[0].startswith("six")} == {"few-elements"}
    assert {e[1] for e in events if e[0].startswith("twocds")} == {"few-cds"}
    assert len([e for e in events if e[0].startswith("six")]) == 6


def test_chunking_at_1000_elements(tmp_path):
    pieces, events, batch, _ = _filter(tmp_path, [("big", 10**6, alternating(1250))], "--keep-edges")
    assert [len(p) for p in pieces] == [1000, 1000, 499]
    assert sum(pieces, []) == ids("big", 1250)
    assert events == {(pieces[1][0], "chunk", "split"), (pieces[2][0], "chunk", "split")}
    names = batch.contigs["name"].tolist()
    assert names[0].startswith("big:1-") and len(set(names)) == 3
    assert (batch.contigs["length"] == batch.contigs["source_end"] - batch.contigs["source_start"] + 1).all()


def test_glm_subcontigs(tmp_path):
    pieces, events, _, _ = _filter(tmp_path, [("g", 10**5, alternating(70))], "--keep-edges", "--glm-subcontigs")
    cds_counts = [sum(1 for i in p if "igs" not in i) for p in pieces]
    assert cds_counts == [30, 30]                                  # the last 10 genes are fewer than 15
    assert pieces[0][0] == "g_1" and pieces[0][-1] == "g_30" and pieces[1][0] == "g_31"
    assert ("g_igs30", "subcontig-boundary", "removed") in events
    assert ("g_61", "short-subcontig", "removed") in events and ("g_igs60", "subcontig-boundary", "removed") in events
    assert sum(1 for e in events if e[1] == "short-subcontig") == 19  # genes 61-70 and the 9 IGS between them


def test_subcontig_minimum_is_inclusive(tmp_path):
    pieces, _, _, _ = _filter(tmp_path, [("g", 10**5, alternating(45))], "--keep-edges", "--glm-subcontigs")
    assert [sum(1 for i in p if "igs" not in i) for p in pieces] == [30, 15]


def test_every_element_is_kept_or_reported(tmp_path, multi_contigs):
    """On a real assembly: kept + removed = all, and the report is byte-identical across runs."""
    assert run("call", multi_contigs, "-o", tmp_path / "e.zarr", "-q").exit_code == 0
    reports = []
    for k in range(2):
        out, rep = tmp_path / f"f{k}.zarr", tmp_path / f"r{k}.tsv"
        r = run("filter", tmp_path / "e.zarr", "-o", out, "-r", rep, "--glm-subcontigs")
        assert r.exit_code == 0
        reports.append(rep.read_bytes())
    assert reports[0] == reports[1]
    assert "filter: edge-" in r.stderr and "filter: kept" in r.stderr
    source = ElementStore(tmp_path / "e.zarr").read()
    kept = ElementStore(tmp_path / "f0.zarr").read()
    removed = [line.split("\t")[1] for line in reports[0].decode().splitlines()[1:] if line.endswith("removed")]
    assert sorted(list(kept.elements["id"]) + removed) == sorted(source.elements["id"])
    assert len(set(removed)) == len(removed)
    # kept elements are unchanged copies of their source rows
    index = {i: k for k, i in enumerate(source.elements["id"])}
    rows = [index[i] for i in kept.elements["id"]]
    for name in ("start", "end", "strand", "aa", "nt"):
        assert list(kept.elements[name]) == list(source.elements[name][rows])
    attrs = zarr.open_group(str(tmp_path / "f0.zarr")).attrs.asdict()
    assert attrs["parameters"]["glm_subcontigs"] is True and len(attrs["inputs"][0]["sha256"]) == 64


def test_filter_function_matches_cli(tmp_path):
    build_store(tmp_path / "in.zarr", [("c", 5000, alternating(5, first_igs=True))])
    stats = run_filter(str(tmp_path / "in.zarr"), str(tmp_path / "o.zarr"), options=FilterOptions())
    assert stats["removed"] == {"edge-igs": 2} and stats["elements_out"] == 8


# -- bad input ----------------------------------------------------------------------------------------------

def test_refuses_store_from_newer_schema(tmp_path):
    src = build_store(tmp_path / "in.zarr", [("c", 5000, alternating(5))])
    meta = json.loads((src / "zarr.json").read_text())
    meta["attributes"]["schema_version"] = SCHEMAS["glmkit.elements"] + 1
    (src / "zarr.json").write_text(json.dumps(meta))
    assert_one_line_error(run("filter", src, "-o", tmp_path / "o.zarr"), "in.zarr", "newer", "upgrade glmkit")
    assert not (tmp_path / "o.zarr").exists()


def test_refuses_wrong_or_unfinished_store(tmp_path, multi_contigs):
    assert_one_line_error(run("filter", multi_contigs, "-o", tmp_path / "o.zarr"), "not a glmkit store")
    other = zarr.open_group(str(tmp_path / "emb.zarr"), mode="w", zarr_format=3)
    other.attrs.update({"schema": "glmkit.embeddings", "schema_version": 1, "complete": True})
    assert_one_line_error(run("filter", tmp_path / "emb.zarr", "-o", tmp_path / "o.zarr"),
                          "emb.zarr", "expected an element store")
    src = build_store(tmp_path / "in.zarr", [("c", 5000, alternating(5))])
    meta = json.loads((src / "zarr.json").read_text())
    del meta["attributes"]["complete"]
    (src / "zarr.json").write_text(json.dumps(meta))
    assert_one_line_error(run("filter", src, "-o", tmp_path / "o.zarr"), "unfinished")
    assert_one_line_error(run("filter", tmp_path / "none.zarr", "-o", tmp_path / "o.zarr"), "no such store")


def test_existing_output_and_report(tmp_path):
    src = build_store(tmp_path / "in.zarr", [("c", 5000, alternating(5))])
    (tmp_path / "r.tsv").write_text("x")
    assert_one_line_error(run("filter", src, "-o", tmp_path / "o.zarr", "-r", tmp_path / "r.tsv"), "r.tsv", "exists")
    assert not (tmp_path / "o.zarr").exists() and not no_leftovers(tmp_path)
    assert run("filter", src, "-o", tmp_path / "o.zarr", "-r", tmp_path / "r.tsv", "--force", "-q").exit_code == 0


def test_report_to_stdout(tmp_path):
    src = build_store(tmp_path / "in.zarr", [("c", 5000, alternating(5, first_igs=True))])
    r = run("filter", src, "-o", tmp_path / "o.zarr", "-r", "-", "-q")
    assert r.exit_code == 0 and r.stderr == ""
    assert r.stdout.splitlines()[1].split("\t")[1:3] == ["c_igs0", "IGS"]


def test_summary_credits_a_dropped_contig_to_the_rule_that_emptied_it(tmp_path):
    # edge-igs removes the first IGS and CDS; the 6 elements left are then too few
    _, events, _, result = _filter(tmp_path, [("c", 5000, alternating(4, first_igs=True))])
    assert ("c_igs0", "edge-igs", "removed") in events and ("c_2", "few-elements", "removed") in events
    lines = {line.split()[1]: line for line in result.stderr.splitlines() if line.startswith("filter: ")}
    assert "(1 contig dropped whole)" in lines["few-elements"]
    assert "dropped whole" not in lines["edge-igs"]
