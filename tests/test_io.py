"""glmkit.io: FASTA, TSV, GFF3 and the Zarr store layer."""

from __future__ import annotations

import gzip
import io

import numpy as np
import pytest
import zarr

from glmkit.errors import GlmkitError
from glmkit.io import fasta
from glmkit.io.fasta import parse_fasta, read_fasta, write_fasta
from glmkit.io.files import InputFile, atomic_outputs
from glmkit.io.gff import GffRecord, read_gff3, write_gff3
from glmkit.io.store import ColumnWriter, RaggedWriter, close_writers, read_ragged
from glmkit.io.tsv import format_value, read_tsv, write_tsv


def test_fasta_any_width_crlf_lowercase_and_blank_lines():
    text = b">a desc here\r\nacg\r\nTN\r\n\r\n>b\nAC\nGT\nA\n"
    records = list(parse_fasta(io.BytesIO(text), "x"))
    assert [(r.name, r.description, r.sequence) for r in records] == [("a", "desc here", b"ACGTN"), ("b", "", b"ACGTA")]


def _naive_fasta(data: bytes):
    """Line by line, the obvious way: the reference the block parser must match (records, or the error's line)."""
    records, name, description, chunks = [], None, "", []
    for line_no, line in enumerate(data.split(b"\n"), 1):
        if line.startswith(b">"):
            header = line[1:].decode().strip()
            if not header:
                return f"line {line_no}: empty FASTA header"
            if name is not None:
                records.append((name, description, b"".join(chunks).upper()))
            name, _, description = header.partition(" ")
            description, chunks = description.strip(), []
        elif line.split():
            if name is None:
                return f"line {line_no}: sequence data before"
            chunks.append(b"".join(line.split()))
    if name is not None:
        records.append((name, description, b"".join(chunks).upper()))
    return records


def test_a_header_name_ends_at_any_ascii_white_space_and_only_there():
    """As Prodigal and NCBI read it: a tab ends the name too (it used to stay in the contig name and break every
    TSV after); characters such as U+2028 are part of the name."""
    text = ">c1\tlen=5 circular\nACGT\n>c2 x\nAC\n>c\u20283\vy\nAC\n>c4\r\nAC\r\n".encode()
    records = list(fasta.parse_fasta(io.BytesIO(text), "f"))
    assert [(r.name, r.description) for r in records] == [("c1", "len=5 circular"), ("c2", "x"), ("c\u20283", "y"),
                                                          ("c4", "")]


@pytest.mark.parametrize("block", [1, 2, 3, 7, 64, 1 << 22])
def test_fasta_block_parser_matches_line_by_line(monkeypatch, block):
    """Random FASTA-like text (CRLF, blank lines, empty headers, data before the first header), parsed with
    blocks from 1 byte (every record and line split across reads) up to the default."""
    import random

    monkeypatch.setattr(fasta, "BLOCK", block)
    rng = random.Random(block)
    for _ in range(400):
        parts = [b"AC\n"] if rng.random() < 0.1 else []
        parts += [b"\n \n"] if rng.random() < 0.2 else []
        for r in range(rng.randint(0, 4)):
            header = rng.choice([b"", b"c%d" % r, b"c%d some desc" % r, b" x\r"])
            parts.append(b">" + header + rng.choice([b"\n", b"\r\n"]))
            for _ in range(rng.randint(0, 4)):
                parts.append(bytes(rng.choice(b"ACGTacgtn \t") for _ in range(rng.randint(0, 9)))
                             + rng.choice([b"\n", b"\r\n", b""]))
        data = b"".join(parts)
        expected = _naive_fasta(data)
        if isinstance(expected, str):
            with pytest.raises(GlmkitError, match=f"f.fna: {expected}"):
                list(parse_fasta(io.BytesIO(data), "f.fna"))
        else:
            assert [(r.name, r.description, r.sequence) for r in parse_fasta(io.BytesIO(data), "f.fna")] == expected


def test_fasta_errors(tmp_path):
    with pytest.raises(GlmkitError, match="before the first '>'"):
        list(parse_fasta(io.BytesIO(b"ACGT\n>a\nAC\n"), "f.fna"))
    with pytest.raises(GlmkitError, match="line 1: empty FASTA header"):
        list(parse_fasta(io.BytesIO(b">\nAC\n"), "f.fna"))
    (tmp_path / "e.fna").write_text(">a\n\n>b\nACGT\n")
    with pytest.raises(GlmkitError, match="record 'a' has no sequence"):
        list(read_fasta(InputFile(tmp_path / "e.fna"), "dna"))


def test_gzip_detected_by_content_and_checksum(tmp_path):
    import hashlib
    data = gzip.compress(b">a\nACGT\n")
    path = tmp_path / "no_gz_suffix.txt"
    path.write_bytes(data)
    source = InputFile(path)
    assert [r.sequence for r in read_fasta(source, "dna")] == [b"ACGT"]
    assert source.sha256 == hashlib.sha256(data).hexdigest()


def test_protein_alphabet(tmp_path):
    (tmp_path / "p.faa").write_text(">p\nmkv*\n>q\nMK*V\n")
    records = read_fasta(InputFile(tmp_path / "p.faa"), "protein")
    assert next(records).sequence == b"MKV"  # upper case, the final stop dropped
    with pytest.raises(GlmkitError, match=r"p.faa: record 'q': invalid amino-acid character '\*' at position 3"):
        next(records)


def test_write_fasta_wraps():
    out = io.StringIO()
    write_fasta(out, [("x d", "A" * 130)], width=60)
    assert out.getvalue() == ">x d\n" + "A" * 60 + "\n" + "A" * 60 + "\n" + "A" * 10 + "\n"


def test_tsv_round_trip_and_formatting(tmp_path):
    assert [format_value(v) for v in (0.1, 1e-20, float("nan"), None, True, np.float32(0.5), np.int64(3))] == \
        ["0.1", "1e-20", "nan", "", "true", "0.5", "3"]
    path = tmp_path / "t.tsv"
    with open(path, "w") as fh:
        assert write_tsv(fh, ["a", "b"], [(1, "x"), (2.5, "y")]) == 2
    assert list(read_tsv(InputFile(path), required=["a"])) == [{"a": "1", "b": "x"}, {"a": "2.5", "b": "y"}]
    with pytest.raises(GlmkitError, match="missing column"):
        list(read_tsv(InputFile(path), required=["c"]))
    with pytest.raises(ValueError):
        write_tsv(io.StringIO(), ["a"], [("tab\there",)])


def test_gff3_round_trip_with_escaping(tmp_path):
    record = GffRecord("chr 1;x", "glmkit", "CDS", 10, 99, 3.14, "-", "0", {"ID": "g=1;2", "note": "a,b"})
    path = tmp_path / "x.gff"
    with open(path, "w") as fh:
        write_gff3(fh, [("chr 1;x", 1000)], [record])
    text = path.read_text()
    assert "chr%201%3Bx\tglmkit\tCDS\t10\t99\t3.1\t-\t0\tID=g%3D1%3B2;note=a%2Cb" in text
    back = list(read_gff3(InputFile(path)))
    assert back[0].seqid == "chr 1;x" and back[0].attributes == {"ID": "g=1;2", "note": "a,b"}


@pytest.mark.parametrize("value", ["plain", "a=b", "a;b", "a&b", "50%", "tab\there", "caf\u00e9", "x,y", "=", ";"])
def test_gff3_attribute_escaping_per_value(value):
    """Each value is percent-encoded exactly when it holds a character GFF3 reserves, whatever its neighbours."""
    from urllib.parse import quote

    from glmkit.io.gff import _ATTR_SAFE

    out = io.StringIO()
    write_gff3(out, [], [GffRecord("c", "s", "CDS", 1, 9, None, "+", "0", {"ID": "g1", "note": value, "n": "7"})])
    assert out.getvalue().splitlines()[1].split("\t")[8] == f"ID=g1;note={quote(value, safe=_ATTR_SAFE)};n=7"


def test_column_writer_writes_whole_chunks(tmp_path):
    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="w", zarr_format=3)
    writer = ColumnWriter(group, "x", np.int32, chunk=4)
    sizes = []
    for part in ([1, 2, 3], [4, 5], [6], [7, 8, 9, 10, 11]):
        writer.extend(part)
        sizes.append(writer.array.shape[0] if writer.array is not None else 0)
    assert sizes == [0, 4, 4, 8]  # only whole chunks until close
    writer.close()
    assert writer.array[:].tolist() == list(range(1, 12))
    assert writer.array.chunks == (4,)


@pytest.mark.parametrize("values, chunk", [([], (1,)), ([7], (1,)), (list(range(5)), (5,)), (list(range(12)), (4,))])
def test_column_writer_short_column_is_one_exact_chunk(tmp_path, values, chunk):
    """A column that ends inside its first chunk is stored as one chunk of its own length, not padded."""
    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="w", zarr_format=3)
    writer = ColumnWriter(group, "x", np.int64, chunk=8)
    writer.extend(values[:3])
    writer.extend(values[3:])
    writer.close()
    stored = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")["x"]
    assert stored[:].tolist() == values
    assert stored.chunks == (chunk if len(values) <= 8 else (8,))


def test_close_writers_closes_every_column_at_once(tmp_path):
    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="w", zarr_format=3)
    numbers, names, sequences = (ColumnWriter(group, "n", np.int32), ColumnWriter(group, "s", str),
                                 RaggedWriter(group, "r"))
    numbers.extend([3, 1, 2])
    names.extend(["a", "bb", "ccc"])
    sequences.extend([b"AC", b"", b"GTA"])
    close_writers([numbers, names, sequences])
    stored = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    assert stored["n"][:].tolist() == [3, 1, 2]
    assert list(stored["s"][:]) == ["a", "bb", "ccc"]
    assert list(read_ragged(stored, "r", 0, 3)) == [b"AC", b"", b"GTA"]


def test_ragged_round_trip(tmp_path):
    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="w", zarr_format=3)
    values = [b"ACGT", b"", b"MKV", b"X" * 1000]
    writer = RaggedWriter(group, "seq")
    writer.extend(values[:2])
    writer.extend(values[2:])
    writer.close()
    assert list(read_ragged(group, "seq", 0, 4)) == values
    assert list(read_ragged(group, "seq", 1, 3)) == values[1:3]
    assert group["seq/offsets"][:].tolist() == [0, 4, 4, 7, 1007]


def test_atomic_outputs_publish_only_on_success(tmp_path):
    target, store = tmp_path / "out.tsv", tmp_path / "out.zarr"
    with pytest.raises(RuntimeError):
        with atomic_outputs([str(target), str(store)]) as (t, s):
            t.write_text("half")
            s.mkdir()
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []
    with atomic_outputs([str(target), None]) as (t, none):
        assert none is None
        t.write_text("done")
    assert target.read_text() == "done"
    with pytest.raises(GlmkitError, match="exists"):
        with atomic_outputs([str(target)]):
            pass
    with pytest.raises(GlmkitError, match="does not exist"):
        with atomic_outputs([str(tmp_path / "no" / "x.tsv")]):
            pass


# -- one writer per output ---------------------------------------------------------------------------------

def _holder(output, *, die: bool = False):
    """A separate process that claims ``output`` (as a glmkit run does) and writes a partial; with ``die`` it is
    SIGKILLed inside the claim, leaving its partial and lock file behind as a killed run does."""
    import subprocess
    import sys

    code = ("import os, signal, sys\n"
            "from glmkit.io.files import atomic_outputs\n"
            f"with atomic_outputs([{str(output)!r}]) as (t,):\n"
            "    t.write_text('half')\n"
            "    print('claimed', flush=True)\n"
            + ("    os.kill(os.getpid(), signal.SIGKILL)\n" if die else "    sys.stdin.read()\n"))
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "claimed\n"
    return proc


def test_a_second_writer_of_an_output_is_refused_naming_the_first(tmp_path, multi_contigs):
    from conftest import assert_one_line_error, run

    out = tmp_path / "x.zarr"
    holder = _holder(out)
    try:
        result = run("call", multi_contigs, "-o", out)
        assert_one_line_error(result, "x.zarr", "another glmkit run is writing it", f"pid {holder.pid} on ")
        with pytest.raises(GlmkitError, match=f"pid {holder.pid}"):
            with atomic_outputs([str(out)], force=True):
                pass
        assert not out.exists() and len(list(tmp_path.glob(".x.zarr.partial-*"))) == 1  # the holder's, untouched
    finally:
        holder.communicate("")
    assert holder.returncode == 0 and out.read_text() == "half"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.zarr"]  # the holder released and removed its lock


def test_leftovers_of_a_killed_run_are_removed_by_the_next_run(tmp_path, multi_contigs):
    from conftest import run

    out = tmp_path / "x.zarr"
    holder = _holder(out, die=True)
    holder.wait()
    left = sorted(p.name for p in tmp_path.iterdir())
    assert len(left) == 2 and left[0] == ".x.zarr.lock" and left[1].startswith(".x.zarr.partial-")
    result = run("call", multi_contigs, "-o", out)  # the dead run's lock is taken over, its partial removed
    assert result.exit_code == 0, result.stderr
    assert f"x.zarr: removing {left[1]}, left by a run that stopped" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.zarr"]


# -- a shared folder is hostile ground: nothing glmkit did not make is followed, truncated or removed ---------

@pytest.mark.parametrize("planted", ["symlink", "dangling symlink", "hard link", "foreign file", "fifo"])
def test_a_lock_name_planted_by_a_neighbour_is_refused_and_left_as_it_was(tmp_path, multi_contigs, planted):
    import os

    from conftest import assert_one_line_error, run

    precious = tmp_path / "notes.txt"
    precious.write_text("precious\n")
    lock = tmp_path / ".out.zarr.lock"
    fragment = {"symlink": "is a symbolic link", "dangling symlink": "is a symbolic link",
                "hard link": "has other hard links", "foreign file": "is not a glmkit lock",
                "fifo": "is not a plain file"}[planted]
    if planted == "symlink":
        lock.symlink_to(precious)
    elif planted == "dangling symlink":
        lock.symlink_to(tmp_path / "created-through-the-link")
    elif planted == "hard link":
        os.link(precious, lock)
    elif planted == "foreign file":
        lock.write_text("my own notes, not a lock\n")
    else:
        os.mkfifo(lock)
    before = lock.lstat()
    assert_one_line_error(run("call", multi_contigs, "-o", tmp_path / "out.zarr", "-q"), ".out.zarr.lock", fragment)
    assert precious.read_text() == "precious\n" and not (tmp_path / "out.zarr").exists()
    assert not (tmp_path / "created-through-the-link").exists()
    assert lock.lstat().st_mtime_ns == before.st_mtime_ns and lock.lstat().st_ino == before.st_ino


def test_a_stale_lock_of_another_user_says_so(tmp_path, multi_contigs, monkeypatch):
    import errno

    import glmkit.io.files as files
    from conftest import assert_one_line_error, run

    lock = tmp_path / ".out.zarr.lock"
    lock.write_text("pid 1 on elsewhere, since 2026-01-01 00:00:00\n")
    real_open = files.os.open

    def refused(path, flags, *args):   # as open(2) answers for a 0644 file of another user (root reads anything)
        if str(path) == str(lock):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(files.os, "open", refused)
    assert_one_line_error(run("call", multi_contigs, "-o", tmp_path / "out.zarr", "-q"), ".out.zarr.lock",
                          "a lock file left by user", "ask them to remove it")


@pytest.mark.parametrize("planted", ["symlink", "file", "foreign folder"])
def test_a_work_folder_name_planted_by_a_neighbour_is_never_used_or_removed(tmp_path, planted):
    from glmkit.io.files import planned_work_folder

    target = tmp_path / "theirs"
    target.mkdir()
    (target / "data.txt").write_text("theirs\n")
    work = tmp_path / ".out.zarr.work"
    if planted == "symlink":
        work.symlink_to(target)
    elif planted == "file":
        work.write_text("theirs\n")
    else:
        (tmp_path / "theirs").rename(work)
    with pytest.raises(GlmkitError, match=r"\.out\.zarr\.work: .*glmkit will not use or remove it"):
        planned_work_folder(tmp_path / "out.zarr", "plan")
    assert work.exists() or work.is_symlink()
    assert (work / "data.txt").read_text() == "theirs\n" if planted != "file" else work.read_text() == "theirs\n"
    # glmkit's own work folders (its plan) are resumed or cleared as before
    other = tmp_path / ".mine.zarr.work"
    assert planned_work_folder(tmp_path / "mine.zarr", "a") == (other, False)
    (other / "done").write_text("x")
    assert planned_work_folder(tmp_path / "mine.zarr", "a") == (other, True) and (other / "done").exists()
    assert planned_work_folder(tmp_path / "mine.zarr", "b") == (other, False) and not (other / "done").exists()


def test_publishing_over_a_link_replaces_the_link_not_what_it_points_to(tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "kept.txt").write_text("kept\n")
    out = tmp_path / "out"
    out.symlink_to(target)
    with atomic_outputs([str(out)], force=True) as (t,):
        t.mkdir()
        (t / "new.txt").write_text("new\n")
    assert not out.is_symlink() and (out / "new.txt").read_text() == "new\n"
    assert sorted(p.name for p in target.iterdir()) == ["kept.txt"]


def test_claims_nest_within_one_process(tmp_path):
    from glmkit.io.files import claim_outputs

    out = tmp_path / "x.tsv"
    with claim_outputs([str(out)]):
        with atomic_outputs([str(out)]) as (t,):
            t.write_text("ok")
        assert (tmp_path / ".x.tsv.lock").exists()
    assert out.read_text() == "ok" and not (tmp_path / ".x.tsv.lock").exists()


def test_output_in_a_folder_that_is_a_file_or_unwritable(tmp_path):
    import os

    (tmp_path / "file").write_text("")
    with pytest.raises(GlmkitError, match=r"x\.tsv: .*file is not a folder"):
        with atomic_outputs([str(tmp_path / "file" / "x.tsv")]):
            pass
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    if os.geteuid() != 0:  # root writes anywhere
        with pytest.raises(GlmkitError, match=r"ro/x\.tsv: cannot write in .*ro \(permission denied\)"):
            with atomic_outputs([str(ro / "x.tsv")]):
                pass


def test_element_store_reads_only_the_columns_asked_for(tmp_path):
    from conftest import build_store, cds, igs
    from glmkit.io.elements import ElementStore

    path = build_store(tmp_path / "e.zarr", [("c1", 100, [cds(aa=b"MKV"), igs(), cds(aa=b"MAAT", strand=-1)]),
                                              ("c2", 50, [cds(aa=b"MW")])])
    store = ElementStore(path)
    full = list(store.batches(max_elements=2))
    some = list(store.batches(max_elements=2, columns=("id", "strand", "aa")))
    assert [b.n_contigs for b in some] == [b.n_contigs for b in full] == [1, 1]
    for a, b in zip(full, some):
        assert set(b.elements) == {"id", "strand", "aa"}
        for name in b.elements:
            assert list(b.elements[name]) == list(a.elements[name])
        assert list(b.contigs["name"]) == list(a.contigs["name"])
    assert list(some[0].elements["aa"]) == [b"MKV", b"", b"MAAT"]


def test_embedding_store_index_reads_the_hash_column_chunk_by_chunk(tmp_path):
    """Lookups span several chunks of the hash column (4 rows each here) and never load it as strings."""
    import hashlib

    from glmkit.io.embeddings import EmbeddingStore, write_embedding_store

    hexes = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(11)]
    vectors = np.arange(11 * 3, dtype=np.float32).reshape(11, 3)
    chunks = [(hexes[i:i + 4], [5] * len(hexes[i:i + 4]), vectors[i:i + 4]) for i in range(0, 11, 4)]
    write_embedding_store(tmp_path / "e.zarr", 11, 3, chunks, {"name": "t"}, dtype="float32", chunk_rows=4)
    store = EmbeddingStore(tmp_path / "e.zarr")
    assert len(store) == 11
    absent = hashlib.sha256(b"absent").hexdigest()
    query = [hexes[7], absent, hexes[0], hexes[10], hexes[3]]
    assert store.rows(query).tolist() == [7, -1, 0, 10, 3]
    assert store._hashes is None   # the index came from 32-byte digests, not from the string column
    np.testing.assert_array_equal(store.get([hexes[9], hexes[2]]), vectors[[9, 2]])
    assert store.fixed_hashes().tolist() == [h.encode() for h in hexes]
    assert store.fixed_hashes("S32").tolist() == [bytes.fromhex(h) for h in hexes]
    assert list(store.hashes) == hexes


def test_user_tables_are_read_with_a_bom_crlf_and_latin_1(tmp_path, caplog):
    """As spreadsheets and older tools write them: a UTF-8 byte-order mark, CRLF, a Latin-1 line (noted once)."""
    import logging

    from glmkit.io.tsv import read_tsv

    path = tmp_path / "t.tsv"
    path.write_bytes(b"\xef\xbb\xbfquery\tpartner\r\nalpha\tbeta\r\ncaf\xe9\tna\xefve\r\n")
    caplog.set_level(logging.INFO, logger="glmkit")
    rows = list(read_tsv(InputFile(path), ("query", "partner")))
    assert rows == [{"query": "alpha", "partner": "beta"}, {"query": "caf\u00e9", "partner": "na\u00efve"}]
    assert "t.tsv: line 3 is not UTF-8: read as Latin-1" in caplog.text


def test_regulondb_with_its_column_header_line_uncommented(tmp_path):
    from glmkit.io.operon_sets import read_known_operons

    path = tmp_path / "OperonSet.txt"
    path.write_text("# RegulonDB\n1)operonName\t2)firstGeneLeftPos\t3)lastGeneRightPos\t4)strand\t5)numberOfGenes\t"
                    "6)operonGenes\t7)evidence\nthrLABC\t190\t5020\tforward\t4\tthrL,thrA,thrB,thrC\t[BPP]\tStrong\n")
    assert read_known_operons(str(path)).operons == [["thrL", "thrA", "thrB", "thrC"]]


def test_a_failed_run_removes_its_empty_work_folder_and_names_a_kept_one(tmp_path):
    from glmkit.io.files import claim_outputs, planned_work_folder

    out = tmp_path / "x.zarr"
    with pytest.raises(GlmkitError) as caught:
        with claim_outputs([str(out)]):
            planned_work_folder(out, "plan")   # bad input found before any work was done
            raise GlmkitError("in.fna: bad record")
    assert str(caught.value) == "in.fna: bad record" and not (tmp_path / ".x.zarr.work").exists()
    with pytest.raises(GlmkitError) as caught:
        with claim_outputs([str(out)]):
            work, _ = planned_work_folder(out, "plan")
            (work / "group-000000.npz").write_bytes(b"done")
            raise GlmkitError("in.fna: bad record later on")
    assert str(caught.value) == (f"in.fna: bad record later on; its finished work is kept in {tmp_path / '.x.zarr.work'}"
                                 f": the same command resumes from it (pretrain: with --resume)")
    assert (tmp_path / ".x.zarr.work" / "group-000000.npz").exists()
