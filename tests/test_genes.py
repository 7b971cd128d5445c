"""`glmkit genes`: element stores from annotations, checked against files the real tools wrote (Prodigal's own
GFF3 and proteins, GenBank and EMBL written by Biopython's writer, RefSeq's E. coli annotation) and against
Biopython's own feature extraction and translation."""

from __future__ import annotations

import gzip
import json
import shutil

import numpy as np
import pytest
from Bio import SeqIO
from Bio.Seq import Seq
from Bio.SeqFeature import AfterPosition, CompoundLocation, SeqFeature, SimpleLocation
from Bio.SeqRecord import SeqRecord

from conftest import PYRODIGAL_DATA, SHARED_DATA, assert_one_line_error, prodigal_faa, run
from glmkit.io.elements import CDS, IGS, ElementStore

ECOLI_GFF, ECOLI_FNA = SHARED_DATA / "ecoli_k12_mg1655.gff.gz", SHARED_DATA / "ecoli_k12_mg1655.fna.gz"
REGULONDB = SHARED_DATA / "regulondb_9.3_OperonSet.txt"
needs_ecoli = pytest.mark.skipif(not ECOLI_GFF.exists(), reason="needs ../shared/data")


def elements(path) -> dict:
    return ElementStore(path).read().elements


def cds_of(path) -> dict:
    e = elements(path)
    rows = np.flatnonzero(e["type"] == CDS)
    return {k: v[rows] for k, v in e.items()}


# -- Prodigal's own GFF3 --------------------------------------------------------------------------------------------

def test_prodigals_gff_gives_prodigals_genes_proteins_and_element_model(tmp_path):
    """Prodigal 2.6.3's GFF3 of a metagenomic contig (a genetic code 4 model, named only in its comments):
    the CDS, partial flags, start codons and proteins are those of Prodigal's own .faa, and the IGS are those
    `glmkit call` makes of the same genes."""
    fna = PYRODIGAL_DATA / "SRR492066.fna.gz"
    result = run("genes", PYRODIGAL_DATA / "SRR492066.meta.gff", "--fasta", fna, "-o", tmp_path / "g.zarr",
                 "-a", tmp_path / "g.faa")
    assert result.exit_code == 0, result.stderr
    prodigal = prodigal_faa(PYRODIGAL_DATA / "SRR492066.meta.faa.gz")
    mine = prodigal_faa(tmp_path / "g.faa")
    assert len(mine) == len(prodigal) == 70
    for a, b in zip(mine, prodigal):
        assert (a[:5], a[8]) == (b[:5], b[8])   # coordinates, strand, partial, start type, protein
    e = cds_of(tmp_path / "g.zarr")
    assert set(e["translation_table"]) == {4}
    assert list(e["id"][:2]) == ["1_1", "1_2"]    # Prodigal's ID= (no locus tags in its GFF3)
    assert run("call", fna, "-o", tmp_path / "c.zarr", "-q").exit_code == 0
    mine, called = elements(tmp_path / "g.zarr"), elements(tmp_path / "c.zarr")
    for column in ("type", "strand", "start", "end", "partial_left", "partial_right", "nt"):
        assert list(mine[column]) == list(called[column]), column


def test_the_gff3_call_writes_comes_back_as_the_same_elements(tmp_path):
    fna = PYRODIGAL_DATA / "MIIJ01000039.fna.gz"
    assert run("call", fna, "-o", tmp_path / "c.zarr", "--gff", tmp_path / "c.gff", "-q").exit_code == 0
    assert run("genes", tmp_path / "c.gff", "--fasta", fna, "-o", tmp_path / "g.zarr", "-q").exit_code == 0
    called, annotated = elements(tmp_path / "c.zarr"), elements(tmp_path / "g.zarr")
    for column in ("id", "type", "strand", "start", "end", "partial_left", "partial_right", "translation_table",
                   "start_type", "nt", "aa"):
        assert list(called[column]) == list(annotated[column]), column


def test_gff3_with_its_own_fasta_section_gzipped_equals_separate_files(tmp_path):
    gff = (PYRODIGAL_DATA / "SRR492066.meta.gff").read_text()
    fasta = gzip.decompress((PYRODIGAL_DATA / "SRR492066.fna.gz").read_bytes()).decode()
    (tmp_path / "one.gff3.gz").write_bytes(gzip.compress((gff + "##FASTA\n" + fasta).encode()))
    assert run("genes", tmp_path / "one.gff3.gz", "-o", tmp_path / "one.zarr", "-q").exit_code == 0
    assert run("genes", PYRODIGAL_DATA / "SRR492066.meta.gff", "--fasta", PYRODIGAL_DATA / "SRR492066.fna.gz",
               "-o", tmp_path / "two.zarr", "-q").exit_code == 0
    one, two = elements(tmp_path / "one.zarr"), elements(tmp_path / "two.zarr")
    for column in one:
        assert list(map(str, one[column])) == list(map(str, two[column])), column


# -- GenBank and EMBL, written by Biopython -------------------------------------------------------------------------

def flat_record() -> tuple[SeqRecord, dict]:
    """A circular 20 kb record of real sequence with every kind of feature the command must handle, and what each
    must become (computed here with Biopython's own extract and translate)."""
    sequence = str(next(SeqIO.parse(gzip.open(PYRODIGAL_DATA / "KK037166.fna.gz", "rt"), "fasta")).seq).upper()
    seq = Seq(sequence)
    # complete genes Prodigal finds in it (start codon ... stop), on both strands
    import pyrodigal

    genes = list(pyrodigal.GeneFinder(meta=True).find_genes(sequence.encode()))
    complete = [g for g in genes if not (g.partial_begin or g.partial_end)]
    plus = [g for g in complete if g.strand > 0][:3]
    minus = [g for g in complete if g.strand < 0][:2]
    features, expected = [], {}

    def cds(tag, location, **qualifiers):
        f = SeqFeature(location, type="CDS", qualifiers={"locus_tag": [tag], "gene": [f"gen{tag[-1]}"],
                                                          "product": [f"protein {tag}"], "transl_table": ["11"],
                                                          **{k: [v] for k, v in qualifiers.items()}})
        features.append(f)
        return f

    for k, g in enumerate(plus + minus):
        f = cds(f"T{k}", SimpleLocation(g.begin - 1, g.end, g.strand))
        expected[f"T{k}"] = str(f.extract(seq).translate(table=11, cds=True))
    # a /translation the file gives, different from the coordinates': the file's is kept
    features[0].qualifiers["translation"] = ["MSTATED"]
    expected["T0"] = "MSTATED"
    # a join of two parts (the gene cut at a codon boundary): the same protein as the whole gene
    g = plus[1]
    join = cds("J1", CompoundLocation([SimpleLocation(g.begin - 1, g.begin + 59, 1),
                                       SimpleLocation(g.begin + 59, g.end, 1)]))
    expected["J1"] = str(join.extract(seq).translate(table=11, cds=True))
    # 5'-partial on the - strand (its 5' end, the right one, cut by 8 bases: complement(a..>b)), codon_start=2
    g = minus[0]
    part = cds("P1", SimpleLocation(g.begin - 1, AfterPosition(g.end - 8), -1), codon_start="2")
    expected["P1"] = str(part.extract(seq)[1:].translate(table=11)).removesuffix("*")
    # a genetic code 4 gene (TGA would read W; its own stop is TAA or TAG)
    g = next(g for g in complete if g.sequence()[-3:] != "TGA" and g.begin > 10_000 and g.strand < 0)
    f4 = cds("F4", SimpleLocation(g.begin - 1, g.end, -1), transl_table="4")
    expected["F4"] = str(f4.extract(seq).translate(table=4, cds=True))
    # not CDS: a pseudogene, a tRNA; left out: a CDS across the origin
    pseudo = cds("PS", SimpleLocation(3000, 3300, 1))   # 3,000-11,000: no other feature here
    pseudo.qualifiers["pseudo"] = [""]
    features.append(SeqFeature(SimpleLocation(5000, 5076, -1), type="tRNA", qualifiers={"locus_tag": ["R1"]}))
    cds("OR", CompoundLocation([SimpleLocation(len(sequence) - 30, len(sequence), 1), SimpleLocation(0, 30, 1)]))
    features.sort(key=lambda f: int(f.location.start))
    record = SeqRecord(seq, id="KK037166.1", name="KK037166",
                       annotations={"molecule_type": "DNA", "topology": "circular"}, features=features)
    return record, expected


def test_genbank_and_embl_by_biopython_give_the_expected_genes(tmp_path):
    record, expected = flat_record()
    SeqIO.write([record], tmp_path / "r.gbk", "genbank")
    SeqIO.write([record], tmp_path / "r.embl", "embl")
    (tmp_path / "r.gbff.gz").write_bytes(gzip.compress((tmp_path / "r.gbk").read_bytes()))
    for name in ("r.gbff.gz", "r.embl"):
        result = run("genes", tmp_path / name, "-o", tmp_path / f"{name}.zarr")
        assert result.exit_code == 0, result.stderr
        assert "1 pseudogenes" in result.stderr and "1 RNA genes" in result.stderr
        assert "1 CDS whose /translation differs" in result.stderr
        assert "1 CDS across the origin of a circular contig, left out" in result.stderr
    gbk, embl = elements(tmp_path / "r.gbff.gz.zarr"), elements(tmp_path / "r.embl.zarr")
    for column in gbk:
        assert list(map(str, gbk[column])) == list(map(str, embl[column])), column
    e = cds_of(tmp_path / "r.embl.zarr")
    proteins = dict(zip(e["id"], (aa.decode() for aa in e["aa"])))
    assert proteins == expected
    by_id = {i: k for k, i in enumerate(e["id"])}
    assert e["gene"][by_id["T3"]] == "gen3" and e["product"][by_id["T3"]] == "protein T3"
    assert e["translation_table"][by_id["F4"]] == 4 and e["locus_tag"][by_id["F4"]] == "F4"
    features = {f.qualifiers["locus_tag"][0]: f for f in record.features}
    for tag in expected:   # nucleotides: Biopython's own extraction; coordinates: the feature's outer span
        k = by_id[tag]
        assert e["nt"][k] == bytes(features[tag].extract(record.seq)), tag
        assert (e["start"][k], e["end"][k]) == (int(features[tag].location.start) + 1,
                                                int(features[tag].location.end)), tag
    assert not e["partial_left"][by_id["T1"]] and not e["partial_right"][by_id["T1"]]
    assert e["partial_right"][by_id["P1"]] and not e["partial_left"][by_id["P1"]]
    assert e["start_type"][by_id["P1"]] == "Edge" and e["start_type"][by_id["T1"]] in ("ATG", "GTG", "TTG")
    # the pseudogene, the tRNA and the origin-spanning CDS lie inside IGS
    all_e = elements(tmp_path / "r.embl.zarr")
    igs = [(s, t) for s, t, k in zip(all_e["start"], all_e["end"], all_e["type"]) if k == IGS]
    for span in ((3001, 3300), (5001, 5076)):
        assert any(s <= span[0] and span[1] <= t for s, t in igs), span


def test_the_elements_of_an_annotation_go_through_filter_and_embed(tmp_path, esm_checkpoint):
    record, _ = flat_record()
    SeqIO.write([record], tmp_path / "r.gbk", "genbank")
    assert run("genes", tmp_path / "r.gbk", "-o", tmp_path / "g.zarr", "-q").exit_code == 0
    assert run("filter", tmp_path / "g.zarr", "-o", tmp_path / "f.zarr", "--min-cds", "1", "--min-elements", "1",
               "-q").exit_code == 0
    kept = cds_of(tmp_path / "f.zarr")
    before = cds_of(tmp_path / "g.zarr")
    product = dict(zip(before["id"], before["product"]))
    assert len(kept["id"]) and all(product[i] == p for i, p in zip(kept["id"], kept["product"]))
    result = run("embed", tmp_path / "f.zarr", "-o", tmp_path / "e.zarr", "-m", esm_checkpoint[0], "-q")
    assert result.exit_code == 0, result.stderr


def test_a_store_from_before_the_annotation_columns_reads_them_empty(tmp_path):
    """Element stores of schema version 2 (no locus_tag, gene, synonyms, product) still open: the columns read
    as empty strings."""
    fna = PYRODIGAL_DATA / "SRR492066.fna.gz"
    assert run("call", fna, "-o", tmp_path / "c.zarr", "-q").exit_code == 0
    store = tmp_path / "c.zarr"
    meta = json.loads((store / "zarr.json").read_text())
    for name in ("locus_tag", "gene", "synonyms", "product"):
        shutil.rmtree(store / "elements" / name)
        meta["attributes"]["integrity"]["arrays"].pop(f"elements/{name}")
    meta["attributes"]["schema_version"] = 2
    (store / "zarr.json").write_text(json.dumps(meta))
    e = elements(store)
    assert set(e["gene"]) == {""} and len(e["gene"]) == len(e["id"])
    assert run("validate", store, "-q").exit_code == 0
    assert run("filter", store, "-o", tmp_path / "f.zarr", "-q").exit_code == 0


# -- bad input --------------------------------------------------------------------------------------------------

def _gff(tmp_path, *rows, fasta=">c1\n" + "ATG" + "AAA" * 98 + "TAA" + "\n"):
    (tmp_path / "a.fna").write_text(fasta)
    (tmp_path / "a.gff").write_text("##gff-version 3\n" + "".join("\t".join(r) + "\n" for r in rows))
    return ["genes", tmp_path / "a.gff", "--fasta", tmp_path / "a.fna", "-o", tmp_path / "o.zarr"]


@pytest.mark.parametrize("rows, fragments", [
    ([("c2", "x", "CDS", "1", "300", ".", "+", "0", "ID=a")], ("a.gff", "sequence 'c2' is annotated but no FASTA")),
    ([("c1", "x", "CDS", "1", "303", ".", "+", "0", "ID=a")], ("a.gff: line 2", "1..303 lies outside 'c1'")),
    ([("c1", "x", "CDS", "1", "100", ".", "+", "0", "ID=a")], ("a.gff: line 2", "not a multiple of three")),
    ([("c1", "x", "CDS", "1", "300", ".", "+", "0", "ID=a;transl_table=7")],
     ("a.gff: line 2", "translation table 7 is not an NCBI genetic code")),
    ([("c1", "x", "CDS", "1", "300", ".", "+", "0", "ID=a"), ("c1", "x", "CDS", "1", "300", ".", "+", "0", "ID=b")],
     ("a.gff: line 3", "the same CDS (1..300, strand +) as", "line 2")),
    ([("c1", "x", "CDS", "1", "300", ".", ".", "0", "ID=a")], ("a.gff: line 2", "strand '.'")),
])
def test_bad_annotations_are_one_line_and_write_nothing(tmp_path, rows, fragments):
    assert_one_line_error(run(*_gff(tmp_path, *rows)), *fragments)
    assert not (tmp_path / "o.zarr").exists()


def test_a_genbank_record_without_sequence_is_refused(tmp_path):
    record = SeqRecord(Seq(None, length=90), id="c1", name="c1", annotations={"molecule_type": "DNA"},
                       features=[SeqFeature(SimpleLocation(0, 9, 1), type="CDS", qualifiers={"locus_tag": ["x"]})])
    SeqIO.write([record], tmp_path / "n.gbk", "genbank")
    assert_one_line_error(run("genes", tmp_path / "n.gbk", "-o", tmp_path / "o.zarr"), "n.gbk", "record c1",
                          "holds no sequence")
    assert not (tmp_path / "o.zarr").exists()


def test_a_sequence_given_twice_is_refused_before_anything_is_written(tmp_path):
    record, _ = flat_record()
    SeqIO.write([record], tmp_path / "a.gbk", "genbank")
    SeqIO.write([record], tmp_path / "b.embl", "embl")
    assert_one_line_error(run("genes", tmp_path / "a.gbk", tmp_path / "b.embl", "-o", tmp_path / "o.zarr", "-q"),
                          "b.embl", "duplicate sequence name 'KK037166.1'", "a.gbk")
    assert_one_line_error(run("genes", tmp_path / "a.gbk", "--fasta", tmp_path / "a.gbk", "-o", tmp_path / "o.zarr"),
                          "--fasta goes with GFF3 annotations", status=2)
    assert not (tmp_path / "o.zarr").exists()


def test_a_gff_without_sequences_asks_for_them(tmp_path):
    args = _gff(tmp_path, ("c1", "x", "CDS", "1", "300", ".", "+", "0", "ID=a"))
    assert_one_line_error(run(*args[:2], "-o", tmp_path / "o.zarr"), "a.gff", "needs its sequences", status=2)


# -- RefSeq E. coli K-12 --------------------------------------------------------------------------------------------

def refseq_cds_names() -> tuple[set[str], dict[str, set[str]]]:
    """Naively from the GFF3: the ID of every CDS feature that is not a pseudogene, and each one's names (gene,
    locus_tag, and the gene row's synonyms)."""
    gene_rows, cds = {}, {}
    with gzip.open(ECOLI_GFF, "rt") as fh:
        for line in fh:
            if line.startswith("#"):
                continue
            f = line.rstrip("\n").split("\t")
            if len(f) != 9:
                continue
            a = dict(kv.split("=", 1) for kv in f[8].split(";") if "=" in kv)
            if f[2] in ("gene", "pseudogene"):
                gene_rows[a["ID"]] = a
            elif f[2] == "CDS" and a.get("pseudo") != "true":
                cds[a["ID"]] = a
    names = {}
    for key, a in cds.items():
        parent = gene_rows.get(a.get("Parent"), {})
        names[key] = {a.get("gene"), a.get("locus_tag"), *parent.get("gene_synonym", "").split(",")} - {None, ""}
    return set(cds), names


@needs_ecoli
def test_refseq_ecoli_every_cds_its_proteins_and_names(tmp_path):
    assert run("genes", ECOLI_GFF, "--fasta", ECOLI_FNA, "-o", tmp_path / "g.zarr", "-q").exit_code == 0
    assert run("call", ECOLI_FNA, "-o", tmp_path / "c.zarr", "-q").exit_code == 0
    ids, _ = refseq_cds_names()
    e = cds_of(tmp_path / "g.zarr")
    assert len(e["id"]) == len(ids) == 4298 and len(set(e["id"])) == len(e["id"])
    by_id = {i: k for k, i in enumerate(e["id"])}
    protein = {i: e["aa"][k].decode() for i, k in by_id.items()}
    assert protein["b0001"] == "MKRISTTITTTITITTGNGAG"      # thrL, NP_414542.1 (Prodigal misses it)
    assert e["gene"][by_id["b0001"]] == "thrL" and "ECK0001" in e["synonyms"][by_id["b0001"]].split(",")
    assert len(protein["b2891"]) == 365                      # prfB: the join of its ribosomal slippage
    for tag, position in (("b1474", 196), ("b3894", 196), ("b4079", 140)):   # selenocysteine by transl_except
        assert protein[tag][position - 1] == "U" and protein[tag].count("U") == 1, tag
    assert {"b0149_NP_414691.1", "b0149_YP_010051172.1"} <= set(e["id"])     # isoforms of one locus tag
    # where Prodigal's genes have the same coordinates, the proteins are the same (pyrodigal translates them)
    called = cds_of(tmp_path / "c.zarr")
    prodigal = {(s, t, d): aa for s, t, d, aa in zip(called["start"], called["end"], called["strand"], called["aa"])}
    same = [(prodigal[key], aa) for key, aa in zip(zip(e["start"], e["end"], e["strand"]), e["aa"]) if key in prodigal]
    assert len(same) > 3700
    differ = [a for a, b in same if a != b]
    assert len(differ) <= 3   # the selenoproteins, whose UGA Prodigal reads as a stop


@needs_ecoli
@pytest.mark.skipif(not REGULONDB.exists(), reason="needs ../shared/data")
def test_refseq_ecoli_operon_genes_are_matched_by_name_without_an_annotation(tmp_path):
    """operons' labels from a `genes` store alone: every RegulonDB operon gene that names a CDS of the
    annotation is found (no --annotation, no stop-codon detour)."""
    from glmkit.commands.operons import neighbour_pairs, pair_labels
    from glmkit.io.operon_sets import read_known_operons

    assert run("genes", ECOLI_GFF, "--fasta", ECOLI_FNA, "-o", tmp_path / "g.zarr", "-q").exit_code == 0
    ids = cds_of(tmp_path / "g.zarr")["id"]

    class WholeGenomeContext:   # what a context store of the whole chromosome offers neighbour_pairs
        path = "ctx.zarr"

        def gene_ids(self):
            return ids

        def gene_contigs(self):
            return np.zeros(len(ids), np.int64)

        def contig_names(self):
            return np.array(["NC_000913.3"], object)

    pairs = neighbour_pairs(WholeGenomeContext(), [str(tmp_path / "g.zarr")])
    y, report = pair_labels(pairs, str(REGULONDB), None)
    _, names = refseq_cds_names()
    cds_names = set().union(*names.values())
    operon_genes = [g for o in read_known_operons(str(REGULONDB)).operons for g in o]
    not_cds = sum(g not in cds_names for g in operon_genes)
    assert report["operon_genes"] == len(operon_genes)
    assert report["operon_genes_not_matched"] == not_cds
    # 2026-12: 423 of 4,525 are no CDS's name: 280 name RNA genes or pseudogenes of the annotation, 143 none
    # of its features (RegulonDB's own names: insertion elements, parts of split genes such as arpB_1)
    assert not_cds < 0.1 * len(operon_genes)
    assert 1400 < report["positive"] < 2300
