"""Malformed inputs for every subcommand, generated from valid ones (never hand-copied files).

    python tests/bad_inputs/cases.py OUTDIR      # write every case to OUTDIR/<name>/ to look at

``build_base(folder)`` makes the valid material once: a FASTA, an element
store, a small random-weight ESM2 in fair-esm's layout and its embedding
store, a tiny trained gLM and its context store, all through glmkit itself.
Each case copies what it needs into its own folder, damages or bends it, and
returns the command line to run there plus what the one-line error must say.
tests/test_bad_inputs.py runs them all: non-zero exit, one line naming the file
and the problem, no traceback, no "internal error", and nothing in the case's
folder created or modified.
"""

from __future__ import annotations

import gzip
import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
TEST_DATA = HERE.parent.parent / "test_data"


@dataclass
class Case:
    name: str
    build: Callable[[Path, Path], list]   # (case folder, base folder) -> command line (str/Path items)
    fragments: tuple[str, ...]            # each must appear in the error line
    status: int = 1
    env: dict = field(default_factory=dict)


# -- the valid material ----------------------------------------------------------------------------------------

def build_base(base: Path) -> Path:
    """Valid inputs of every kind, made by glmkit from the test genomes (about 15 s)."""
    sys.path.insert(0, str(HERE.parent))
    from conftest import make_fair_esm_checkpoint, run

    base.mkdir(parents=True, exist_ok=True)
    shutil.copy(TEST_DATA / "multi_contigs.fna", base / "contigs.fna")
    make_fair_esm_checkpoint(base / "esm.pt")
    make_fair_esm_checkpoint(base / "other_esm.pt", seed=3)
    steps = [
        ("call", base / "contigs.fna", "-o", base / "el.zarr", "-a", base / "proteins.faa"),
        ("embed", base / "el.zarr", "-o", base / "emb.zarr", "-m", base / "esm.pt", "--map", base / "map.tsv"),
        ("embed", base / "el.zarr", "-o", base / "other_emb.zarr", "-m", base / "other_esm.pt"),
        ("pretrain", base / "el.zarr", "-e", base / "emb.zarr", "-o", base / "glm", "--preset", "tiny",
         "--max-steps", "2", "--batch-size", "2", "--threads", "1"),
        ("contextualize", base / "el.zarr", "-e", base / "emb.zarr", "-m", base / "glm", "-o", base / "ctx.zarr",
         "--threads", "1"),
        ("contextualize", base / "el.zarr", "-e", base / "emb.zarr", "-m", base / "glm", "-o",
         base / "ctx_attention.zarr", "--attention", "--threads", "1"),
        ("export-glm", base / "glm", "-o", base / "release"),
        ("pretrain", base / "el.zarr", "--arch", "glm2", "-o", base / "glm2", "--preset", "tiny", "--context", "256",
         "--max-steps", "2", "--batch-size", "2", "--threads", "1"),
    ]
    for args in steps:
        result = run(*args, "-q")
        assert result.exit_code == 0, (args, result.stderr)
    return base


def copy(base: Path, name: str, here: Path, as_name: str | None = None) -> Path:
    source, target = base / name, here / (as_name or name)
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copy(source, target)
    return target


# -- ways to damage a Zarr store --------------------------------------------------------------------------------

def first_chunk(store: Path, array: str) -> Path:
    return next(p for p in sorted((store / array / "c").rglob("*")) if p.is_file())


def delete_chunk(store: Path, array: str) -> Path:
    first_chunk(store, array).unlink()
    return store


def truncate_chunk(store: Path, array: str) -> Path:
    chunk = first_chunk(store, array)
    data = chunk.read_bytes()
    chunk.write_bytes(data[: len(data) // 2])
    return store


def flip_bytes(store: Path, array: str) -> Path:
    chunk = first_chunk(store, array)
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x5A
    chunk.write_bytes(bytes(data))
    return store


def missing_array(store: Path, array: str) -> Path:
    shutil.rmtree(store / array)
    return store


def edit_attributes(store: Path, **changes) -> Path:
    meta = json.loads((store / "zarr.json").read_text())
    meta["attributes"].update(changes)
    (store / "zarr.json").write_text(json.dumps(meta))
    return store


def drop_attribute(store: Path, name: str) -> Path:
    meta = json.loads((store / "zarr.json").read_text())
    del meta["attributes"][name]
    (store / "zarr.json").write_text(json.dumps(meta))
    return store


DAMAGE = {  # name -> (function, what the error says)
    "deleted-chunk": (delete_chunk, "is missing"),
    "truncated-chunk": (truncate_chunk, "checksum mismatch"),
    "flipped-bytes": (flip_bytes, "checksum mismatch"),
    "missing-array": (missing_array, "is missing"),
}
STORES = {  # store in base -> an array to damage
    "el.zarr": "elements/type",   # a column every reader of element stores reads (readers skip the others)
    "emb.zarr": "embedding",
    "ctx.zarr": "genes/embedding",
}


# -- helpers for the cases --------------------------------------------------------------------------------------

def write(path: Path, text: str | bytes) -> Path:
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return path


def embedding_store_like(base: Path, out: Path, change: Callable) -> Path:
    """A finished embedding store with the base store's rows, model and hashes, its values passed through
    ``change`` (made with glmkit's own writer, so it is whole: only its values are wrong)."""
    from glmkit.io.embeddings import EmbeddingStore, PlannedRows, ResumableEmbeddingWriter

    store = EmbeddingStore(base / "emb.zarr")
    values = change(store.embedding[:].copy())
    hashes = [str(h) for h in store.hashes]
    writer = ResumableEmbeddingWriter(out, {}, [], PlannedRows.in_memory(hashes, store.lengths), values.shape[1],
                                      str(values.dtype), store.model, len(hashes))
    writer.write_chunk(0, values)
    writer.publish([])
    return out


def subset_embedding_store(base: Path, out: Path) -> Path:
    from glmkit.io.embeddings import EmbeddingStore, PlannedRows, ResumableEmbeddingWriter

    store = EmbeddingStore(base / "emb.zarr")
    keep = len(store) // 2
    writer = ResumableEmbeddingWriter(out, {}, [], PlannedRows.in_memory(
        [str(h) for h in store.hashes[:keep]], store.lengths[:keep]), store.embedding.shape[1], "float32",
                                      store.model, keep)
    writer.write_chunk(0, store.embedding[:keep])
    writer.publish([])
    return out


def rewrite_checkpoint(folder: Path, change: Callable[[dict], dict], fix_checksum: bool = True) -> Path:
    """Change the weights of a checkpoint; by default record their new checksum, so only the change shows."""
    import hashlib

    from safetensors.torch import load_file, save_file

    ckpt = folder / "checkpoint"
    save_file(change(load_file(str(ckpt / "model.safetensors"))), str(ckpt / "model.safetensors"))
    if fix_checksum:
        meta = json.loads((ckpt / "config.json").read_text())
        meta["files"]["model.safetensors"] = hashlib.sha256((ckpt / "model.safetensors").read_bytes()).hexdigest()
        (ckpt / "config.json").write_text(json.dumps(meta))
    return folder


def edit_checkpoint_config(folder: Path, **changes) -> Path:
    path = folder / "checkpoint" / "config.json"
    meta = json.loads(path.read_text())
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(meta.get(key), dict):
            meta[key].update(value)
        else:
            meta[key] = value
    path.write_text(json.dumps(meta))
    return folder


def resized(weights: dict) -> dict:
    import torch

    name = next((k for k in weights if k.endswith("intermediate.weight")), "tok_embeddings.weight")  # gLM, gLM2
    weights[name] = torch.zeros(weights[name].shape[0] + 1, weights[name].shape[1])
    return weights


# -- the cases --------------------------------------------------------------------------------------------------

def _call_cases() -> list[Case]:
    c = []

    def fasta(text, name="in.fna"):
        return lambda d, b: [d / name] if write(d / name, text) else []

    def add(name, build, *fragments, status=1, extra=()):
        def builder(d, b, build=build):
            return ["call", *build(d, b), "-o", d / "out.zarr", *extra]
        c.append(Case(f"call-{name}", builder, fragments, status))

    add("empty-file", fasta(""), "in.fna", "no FASTA records")
    add("protein-fasta", lambda d, b: [copy(Path(TEST_DATA), "proteins.faa", d)], "proteins.faa",
        "looks like a protein")
    add("non-iupac", fasta(">a\nACGTACGT7ACGT\n"), "in.fna", "invalid nucleotide character '7'")
    add("truncated-gzip", lambda d, b: [copy(Path(TEST_DATA), "truncated.fna.gz", d)], "truncated.fna.gz",
        "truncated or corrupt gzip")
    add("gzip-of-garbage", lambda d, b: [write(d / "g.fna.gz", gzip.compress(bytes(range(256)) * 8))], "g.fna.gz",
        "not FASTA")
    add("binary-garbage", fasta(bytes(range(256)) * 4), "in.fna", "not FASTA")
    add("directory", lambda d, b: [(d / "dir").mkdir() or d / "dir"], "dir", "is a directory")
    add("missing-file", lambda d, b: [d / "nope.fna"], "nope.fna", "no such file")
    add("duplicate-names", fasta(">a\nACGT\n>b x\nACGT\n>a\nACGT\n"), "in.fna", "duplicate contig name 'a'")
    add("empty-header", fasta(">a\nACGT\n>\nACGT\n"), "in.fna", "line 3", "empty FASTA header")
    add("sequence-before-header", fasta("ACGT\n>a\nACGT\n"), "in.fna", "line 1", "before the first '>'")
    add("single-too-short", fasta(">a\n" + "ACGTTGCA" * 500 + "\n"), "in.fna", "too short to train",
        extra=("--mode", "single"))
    add("bad-translation-table", fasta(">a\nACGT\n"), "--translation-table 7", status=2, extra=("-g", "7"))
    add("overlap-over-min-gene", fasta(">a\nACGT\n"), "--max-overlap", status=2,
        extra=("--max-overlap", "100", "--min-gene", "90"))
    add("negative-threads", fasta(">a\nACGT\n"), "--threads", "-1", status=2, extra=("--threads", "-1"))
    add("stdin-twice", lambda d, b: ["-", "-"], "stdin", "only once")
    add("cr-only-line-ends", fasta(">a\rACGTACGT\r>b\rACGT\r"), "in.fna", "carriage return alone")
    add("names-equal-up-to-a-tab", fasta(">a\tfirst\nACGT\n>a second\nACGT\n"), "in.fna", "duplicate contig name 'a'")

    def same(d, b):
        write(d / "in.fna", ">a\nACGT\n")
        return ["call", d / "in.fna", "-o", d / "in.fna", "--force"]
    c.append(Case("call-output-is-input", same, ("in.fna", "is also an input")))

    def parent_is_file(d, b):
        write(d / "in.fna", ">a\nACGT\n")
        write(d / "file", "")
        return ["call", d / "in.fna", "-o", d / "file" / "out.zarr"]
    c.append(Case("call-output-parent-is-file", parent_is_file, ("out.zarr", "is not a folder")))

    def missing_folder(d, b):
        write(d / "in.fna", ">a\nACGT\n")
        return ["call", d / "in.fna", "-o", d / "no" / "out.zarr"]
    c.append(Case("call-output-folder-missing", missing_folder, ("out.zarr", "does not exist")))

    def exists(d, b):
        write(d / "in.fna", ">a\nACGT\n")
        (d / "out.zarr").mkdir()
        return ["call", d / "in.fna", "-o", d / "out.zarr"]
    c.append(Case("call-output-exists", exists, ("out.zarr", "use --force")))

    def twice(d, b):
        write(d / "in.fna", ">a\nACGT\n")
        return ["call", d / "in.fna", "-o", d / "out.zarr", "--gff", d / "out.zarr"]
    c.append(Case("call-output-named-twice", twice, ("out.zarr", "named twice")))
    return c


def _genes_cases() -> list[Case]:
    """Annotations that cannot become elements, each with the contig of the base's FASTA."""
    c = []
    sequence = ">c1\n" + "ATG" + "AAA" * 98 + "TAA" + "\n"

    def gff(*rows, fasta=sequence, extra=()):
        def build(d, b):
            write(d / "a.fna", fasta)
            write(d / "a.gff", "##gff-version 3\n" + "".join("\t".join(r) + "\n" for r in rows))
            return ["genes", d / "a.gff", "--fasta", d / "a.fna", "-o", d / "out.zarr", *extra]
        return build

    def row(seqid="c1", start="1", end="300", strand="+", attributes="ID=a"):
        return (seqid, "test", "CDS", start, end, ".", strand, "0", attributes)

    def genbank_without_sequence(d, b):
        write(d / "n.gbk", "LOCUS       c1                        90 bp    DNA              UNK 01-JAN-1980\n"
              "FEATURES             Location/Qualifiers\n     CDS             1..9\n"
              "                     /locus_tag=\"x\"\nORIGIN\n//\n")
        return ["genes", d / "n.gbk", "-o", d / "out.zarr"]

    add = lambda name, build, *fragments, status=1: c.append(Case(f"genes-{name}", build, fragments, status))  # noqa: E731
    add("seqid-not-in-the-fasta", gff(row(seqid="c2")), "a.gff", "sequence 'c2' is annotated but no FASTA")
    add("cds-out-of-range", gff(row(end="303")), "a.gff: line 2", "lies outside 'c1'")
    add("cds-not-a-multiple-of-three", gff(row(end="100")), "a.gff: line 2", "not a multiple of three")
    add("unknown-translation-table", gff(row(attributes="ID=a;transl_table=7")), "a.gff: line 2",
        "translation table 7 is not an NCBI genetic code")
    add("the-same-cds-twice", gff(row(), row(attributes="ID=b")), "a.gff: line 3", "the same CDS")
    add("one-id-on-two-contigs", gff(row(attributes="locus_tag=t1"), row(seqid="c2", attributes="locus_tag=t1"),
                                     fasta=sequence + sequence.replace("c1", "c2")), "gene id 't1' is also the id of")
    add("no-strand", gff(row(strand=".")), "a.gff: line 2", "strand '.'")
    add("genbank-without-sequence", genbank_without_sequence, "n.gbk", "record c1", "holds no sequence")
    add("gff-without-sequences", lambda d, b: ["genes", write(d / "a.gff", "##gff-version 3\n" + "\t".join(row())
                                                              + "\n"), "-o", d / "out.zarr"],
        "a.gff", "needs its sequences", status=2)
    add("not-an-annotation", lambda d, b: ["genes", copy(b, "contigs.fna", d), "-o", d / "out.zarr"],
        "contigs.fna", "neither GFF3")
    add("output-over-the-annotation", lambda d, b: gff(row())(d, b)[:4] + ["-o", d / "a.gff", "--force"],
        "a.gff", "is also an input")
    add("bad-translation-table-option", gff(row(), extra=("-g", "7")), "translation table 7", status=2)
    return c


def _store_input_cases(command: str, build_args: Callable[[Path, Path, Path], list],
                       wrong_stage: bool = True) -> list[Case]:
    """A command reading an element store, given damaged, foreign or unfinished ones."""
    c = []
    for damage, (function, says) in DAMAGE.items():
        def builder(d, b, function=function):
            store = function(copy(b, "el.zarr", d), STORES["el.zarr"])
            return build_args(d, b, store)
        c.append(Case(f"{command}-elements-{damage}", builder, ("el.zarr", STORES["el.zarr"].split("/")[0], says)))
    c.append(Case(f"{command}-elements-from-the-future",
                  lambda d, b: build_args(d, b, edit_attributes(copy(b, "el.zarr", d), schema_version=99)),
                  ("el.zarr", "version 99", "upgrade glmkit")))
    c.append(Case(f"{command}-elements-without-manifest",
                  lambda d, b: build_args(d, b, drop_attribute(copy(b, "el.zarr", d), "integrity")),
                  ("el.zarr", "no integrity manifest", "damaged")))
    c.append(Case(f"{command}-elements-unfinished",
                  lambda d, b: build_args(d, b, edit_attributes(copy(b, "el.zarr", d), complete=False)),
                  ("el.zarr", "unfinished store")))
    if wrong_stage:  # (embed takes embedding stores as inputs too)
        c.append(Case(f"{command}-elements-is-embeddings",
                      lambda d, b: build_args(d, b, copy(b, "emb.zarr", d, "el.zarr")),
                      ("el.zarr", "is an embedding store", "expected an element store")))
    return c


def _filter_cases() -> list[Case]:
    c = _store_input_cases("filter", lambda d, b, store: ["filter", store, "-o", d / "out.zarr"])
    c.append(Case("filter-not-a-store", lambda d, b: ["filter", copy(b, "contigs.fna", d), "-o", d / "out.zarr"],
                  ("contigs.fna", "not a glmkit store")))
    c.append(Case("filter-empty-folder", lambda d, b: ["filter", (d / "e.zarr").mkdir() or d / "e.zarr", "-o",
                                                       d / "out.zarr"], ("e.zarr", "not a glmkit store")))
    c.append(Case("filter-garbage-metadata", lambda d, b: ["filter", write_metadata(copy(b, "el.zarr", d)),
                                                           "-o", d / "out.zarr"], ("el.zarr", "unreadable")))
    c.append(Case("filter-output-is-input", lambda d, b: ["filter", copy(b, "el.zarr", d), "-o", d / "el.zarr",
                                                          "--force"], ("el.zarr", "is also an input")))
    c.append(Case("filter-output-inside-input", lambda d, b: ["filter", copy(b, "el.zarr", d), "-o",
                                                              d / "el.zarr" / "x.zarr"], ("x.zarr", "overlaps")))
    c.append(Case("filter-subcontig-bounds", lambda d, b: ["filter", copy(b, "el.zarr", d), "-o", d / "out.zarr",
                                                           "--min-subcontig-genes", "40"],
                  ("--min-subcontig-genes", "must not exceed"), status=2))
    c.append(Case("filter-fraction-out-of-range", lambda d, b: ["filter", copy(b, "el.zarr", d), "-o",
                                                                d / "out.zarr", "--max-invalid-fraction", "1.5"],
                  ("--max-invalid-fraction", "1.5"), status=2))
    return c


def write_metadata(store: Path) -> Path:
    (store / "zarr.json").write_text("{not json")
    return store


def _embed_cases() -> list[Case]:
    def embed(d, b, *inputs, model=True, extra=()):
        return ["embed", *inputs, "-o", d / "out.zarr", *(["-m", copy(b, "esm.pt", d)] if model else []), *extra]

    c = _store_input_cases("embed", lambda d, b, store: embed(d, b, store), wrong_stage=False)

    def faa(text):
        return lambda d, b: embed(d, b, write(d / "p.faa", text))

    c += [
        Case("embed-unknown-model", lambda d, b: ["embed", copy(b, "el.zarr", d), "-o", d / "out.zarr", "-m",
                                                  "esm9_giant"], ("unknown model 'esm9_giant'",)),
        Case("embed-corrupt-checkpoint", lambda d, b: ["embed", copy(b, "el.zarr", d), "-o", d / "out.zarr", "-m",
                                                       write(d / "bad.pt", b"\x80\x02garbage")],
             ("bad.pt", "not a readable")),
        Case("embed-truncated-checkpoint", lambda d, b: ["embed", copy(b, "el.zarr", d), "-o", d / "out.zarr", "-m",
                                                         truncate_file(copy(b, "esm.pt", d))],
             ("esm.pt", "not a readable")),
        Case("embed-pickle-of-another-class", lambda d, b: ["embed", copy(b, "el.zarr", d), "-o", d / "out.zarr",
                                                            "-m", foreign_pickle(d / "evil.pt")],
             ("evil.pt", "not a readable")),
        Case("embed-hf-folder-not-esm", lambda d, b: ["embed", copy(b, "el.zarr", d), "-o", d / "out.zarr", "-m",
                                                      hf_folder(d / "hf", {"model_type": "bert"})],
             ("hf", "not an ESM2 model")),
        Case("embed-hf-folder-without-weights", lambda d, b: ["embed", copy(b, "el.zarr", d), "-o", d / "out.zarr",
                                                              "-m", hf_folder(d / "hf", None)],
             ("hf", "no model.safetensors")),
        Case("embed-nucleotide-fasta", faa(">a\nATGGCGTACGTTAGCATGCATGCATCGATCGAT\n"), ("p.faa", "'a'",
                                                                                        "looks like a nucleotide")),
        Case("embed-internal-stop", faa(">a\nMKV*LLE\n"), ("p.faa", "'a'", "'*'", "position 4")),
        Case("embed-empty-record", faa(">a\nMKV\n>b\n\n"), ("p.faa", "'b' has no sequence")),
        Case("embed-invalid-character", faa(">a\nMKV1\n"), ("p.faa", "invalid amino-acid character '1'")),
        Case("embed-duplicate-ids", faa(">a\nMKV\n>a\nMKL\n"), ("p.faa", "duplicate protein id 'a'")),
        Case("embed-damaged-embedding-input", lambda d, b: embed(d, b, flip_bytes(copy(b, "emb.zarr", d),
                                                                                  "embedding"), copy(b, "el.zarr", d)),
             ("emb.zarr", "embedding", "checksum mismatch")),
        Case("embed-store-of-another-model", lambda d, b: embed(d, b, copy(b, "other_emb.zarr", d),
                                                                copy(b, "el.zarr", d)),
             ("other_emb.zarr", "other settings")),
        Case("embed-shard-out-of-range", lambda d, b: embed(d, b, copy(b, "el.zarr", d), extra=("--shard", "3/2")),
             ("--shard", "between 1 and N"), status=2),
        Case("embed-map-with-shard", lambda d, b: embed(d, b, copy(b, "el.zarr", d),
                                                        extra=("--shard", "1/2", "--map", d / "m.tsv")),
             ("--map", "--shard"), status=2),
        Case("embed-layer-out-of-range", lambda d, b: embed(d, b, copy(b, "el.zarr", d), extra=("--layer", "9")),
             ("--layer 9", "layers 0 to 2"), status=2),
        Case("embed-without-model", lambda d, b: embed(d, b, copy(b, "el.zarr", d), model=False),
             ("--model is required",), status=2),
        Case("embed-output-is-input", lambda d, b: ["embed", copy(b, "emb.zarr", d), "-o", d / "emb.zarr",
                                                    "--force"], ("emb.zarr", "is also an input")),
        Case("embed-cluster-without-mmseqs", lambda d, b: embed(d, b, copy(b, "el.zarr", d),
                                                                extra=("--cluster-id", "0.9")),
             ("GLMKIT_MMSEQS=/nonexistent/mmseqs", "no such executable"),
             env={"GLMKIT_MMSEQS": "/nonexistent/mmseqs"}),
    ]
    return c


def few_genes(path: Path) -> Path:
    """An element store whose contigs have 5 genes each: no gLM sub-contig (15 genes at least) in it."""
    from conftest import build_store, cds, igs

    return build_store(path, [(f"c{i}", 5000, [igs(), *(e for _ in range(5) for e in (cds(), igs()))])
                              for i in range(3)])


def truncate_file(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def foreign_pickle(path: Path) -> Path:
    """A checkpoint holding an object of a class outside fair-esm's layout: stands for a malicious pickle."""
    from fractions import Fraction

    import torch

    torch.save({"cfg": {"model": Fraction(1, 3)}, "model": {}}, path)
    return path


def hf_folder(path: Path, config: dict | None) -> Path:
    path.mkdir()
    write(path / "config.json", json.dumps(config or {"model_type": "esm", "num_hidden_layers": 2,
                                                      "hidden_size": 64, "num_attention_heads": 4}))
    return path


def _pretrain_cases() -> list[Case]:
    def pretrain(d, b, el=None, emb=None, extra=(), out="glm"):
        return ["pretrain", el or copy(b, "el.zarr", d), "-e", emb or copy(b, "emb.zarr", d), "-o", d / out,
                "--preset", "tiny", "--max-steps", "2", "--batch-size", "2", "--threads", "1", *extra]

    c = _store_input_cases("pretrain", lambda d, b, store: pretrain(d, b, el=store))
    for damage, (function, says) in DAMAGE.items():
        c.append(Case(f"pretrain-embeddings-{damage}",
                      lambda d, b, function=function: pretrain(d, b, emb=function(copy(b, "emb.zarr", d),
                                                                                  "embedding")),
                      ("emb.zarr", "embedding", says)))
    c += [
        Case("pretrain-world-size-without-torchrun", lambda d, b: pretrain(d, b), ("WORLD_SIZE=2", "torchrun"),
             status=2, env={"WORLD_SIZE": "2", "MASTER_ADDR": "", "MASTER_PORT": ""}),
        Case("pretrain-world-size-not-a-number", lambda d, b: pretrain(d, b), ("WORLD_SIZE='two'", "not a number"),
             status=2, env={"WORLD_SIZE": "two"}),
        Case("pretrain-rank-beyond-the-world", lambda d, b: pretrain(d, b), ("RANK=3", "WORLD_SIZE=2"), status=2,
             env={"WORLD_SIZE": "2", "RANK": "3", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29999"}),
    ]
    nan = lambda v: (v.__setitem__((slice(None, None, 2), 5), float("nan")), v)[1]  # noqa: E731
    inf = lambda v: (v.__setitem__((4, 0), float("inf")), v)[1]  # noqa: E731
    c += [
        Case("pretrain-embeddings-missing-rows", lambda d, b: pretrain(d, b, emb=subset_embedding_store(
            b, d / "half.zarr")), ("half.zarr", "no embedding for", "e.g. gene")),
        Case("pretrain-nan-embeddings", lambda d, b: pretrain(d, b, emb=embedding_store_like(
            b, d / "nan.zarr", nan)), ("nan.zarr", "NaN or infinite", "genes")),
        Case("pretrain-inf-embeddings", lambda d, b: pretrain(d, b, emb=embedding_store_like(
            b, d / "inf.zarr", inf)), ("inf.zarr", "NaN or infinite", "genes")),
        Case("pretrain-heads-do-not-divide", lambda d, b: pretrain(d, b, extra=("--hidden-size", "100",
                                                                                  "--num-heads", "7")),
             ("--hidden-size 100", "--num-heads 7"), status=2),
        Case("pretrain-zero-lr", lambda d, b: pretrain(d, b, extra=("--lr", "0")), ("--lr",), status=2),
        Case("pretrain-no-subcontigs", lambda d, b: pretrain(d, b, el=few_genes(d / "few.zarr")),
             ("few.zarr", "no sub-contigs of at least 15 genes")),
        Case("pretrain-resume-without-checkpoint", lambda d, b: pretrain(d, b, extra=("--resume",)),
             ("glm", "nothing to resume")),
        Case("pretrain-output-exists", lambda d, b: (copy(b, "glm", d), pretrain(d, b))[1],
             ("glm", "--resume", "--force")),
        Case("pretrain-resume-damaged-checkpoint", lambda d, b: (
            rewrite_checkpoint(copy(b, "glm", d), lambda w: {k: v * 2 for k, v in w.items()}, fix_checksum=False),
            pretrain(d, b, extra=("--resume",)))[1], ("model.safetensors", "damaged")),
        Case("pretrain-resume-wrong-shape", lambda d, b: (rewrite_checkpoint(copy(b, "glm", d), resized),
                                                          pretrain(d, b, extra=("--resume",)))[1],
             ("model.safetensors", "has shape")),
        Case("pretrain-resume-other-architecture", lambda d, b: (edit_checkpoint_config(
            copy(b, "glm", d), architecture="gLM2"), pretrain(d, b, extra=("--resume",)))[1],
            ("checkpoint", "a gLM2 checkpoint; expected gLM")),
        Case("pretrain-resume-other-embeddings", lambda d, b: (copy(b, "glm", d), pretrain(
            d, b, emb=copy(b, "other_emb.zarr", d), extra=("--resume",)))[1], ("checkpoint", "trained on")),
        Case("pretrain-output-is-input", lambda d, b: pretrain(d, b, out="el.zarr", extra=("--force",)),
             ("el.zarr", "is also an input")),
    ]
    return c


def published_glm2(path: Path, **changes) -> Path:
    """A random-weight gLM2 folder in the published layout (transformers' save_pretrained), bent by ``changes``:
    drop="w3" removes a tensor; other keys overwrite config.json."""
    sys.path.insert(0, str(HERE.parent))
    from conftest import published_glm2_folder

    from glmkit.models.glm2.model import GLM2Config

    published_glm2_folder(path, GLM2Config(dim=24, depth=2, heads=4, swiglu_multiple_of=16), **changes)
    return path


def _glm2_cases() -> list[Case]:
    def pretrain(d, b, el=None, extra=(), out="m"):
        return ["pretrain", el or copy(b, "el.zarr", d), "--arch", "glm2", "-o", d / out, "--preset", "tiny",
                "--context", "256", "--max-steps", "2", "--batch-size", "2", "--threads", "1", *extra]

    def ctx(d, b, model=None, extra=()):
        return ["contextualize", copy(b, "el.zarr", d), "-m", model or copy(b, "glm2", d), "-o", d / "out.zarr",
                "--context", "256", "--threads", "1", *extra]

    c = _store_input_cases("pretrain-glm2", lambda d, b, store: pretrain(d, b, el=store))
    c += [
        Case("pretrain-glm2-resume-a-glm", lambda d, b: (copy(b, "glm", d, "m"), pretrain(d, b, extra=("--resume",)))[1],
             ("checkpoint", "a gLM checkpoint; expected gLM2")),
        Case("pretrain-glm2-with-embeddings", lambda d, b: pretrain(d, b, extra=("-e", copy(b, "emb.zarr", d))),
             ("--embeddings is for the gLM",), status=2),
        Case("pretrain-glm2-glm-preset", lambda d, b: ["pretrain", copy(b, "el.zarr", d), "--arch", "glm2", "-o",
                                                       d / "m", "--preset", "paper"],
             ("--preset paper is not a gLM2 preset",), status=2),
        Case("pretrain-glm-without-embeddings", lambda d, b: ["pretrain", copy(b, "el.zarr", d), "-o", d / "m"],
             ("--embeddings is required",), status=2),
        Case("pretrain-glm2-context-too-short", lambda d, b: pretrain(d, b, extra=("--context", "2")),
             ("--context",), status=2),
        Case("contextualize-glm2-with-embeddings", lambda d, b: ctx(d, b, extra=("-e", copy(b, "emb.zarr", d))),
             ("--embeddings is for gLM models",), status=2),
        Case("contextualize-glm-without-embeddings", lambda d, b: ctx(d, b, model=copy(b, "glm", d))[:-4],
             ("--embeddings is required for gLM models",), status=2),
        Case("contextualize-glm2-attention", lambda d, b: ctx(d, b, extra=("--attention",)),
             ("--attention is an option of gLM models",), status=2),
        Case("contextualize-glm2-folder-missing-tensor", lambda d, b: ctx(d, b, model=published_glm2(
            d / "gLM2_150M", drop="w3")), ("gLM2_150M", "no tensor glm2.encoder.layers.1.feed_forward.w3.weight")),
        Case("contextualize-glm2-folder-other-shape", lambda d, b: ctx(d, b, model=published_glm2(
            d / "gLM2_150M", dim=48)), ("gLM2_150M", "glm2.tok_embeddings.weight has shape (37, 24)",
                                        "config.json makes it (37, 48)")),
        Case("contextualize-glm2-layer-out-of-range", lambda d, b: ctx(d, b, extra=("--layer", "9")),
             ("--layer 9", "layers 0 to 2")),
        Case("contextualize-glm2-checkpoint-wrong-shape", lambda d, b: ctx(d, b, model=rewrite_checkpoint(
            copy(b, "glm2", d), resized)), ("model.safetensors", "has shape")),
    ]
    return c


def _jacobian_cases() -> list[Case]:
    def jac(d, b, fasta=None, model=None, extra=(), out="c.npy"):
        return ["jacobian", fasta or write(d / "pair.faa", ">a\nMKVLAAG\n>b\nMSTNPK\n"), "-m",
                model or copy(b, "esm.pt", d), "-o", d / out, "--threads", "1", *extra]

    def region(d, b, store, where="contig_1:1-5"):
        return ["jacobian", store, "--region", where, "-m", copy(b, "glm2", d), "-o", d / "c.npy", "--threads", "1"]

    c = _store_input_cases("jacobian", lambda d, b, store: region(d, b, store), wrong_stage=False)
    c += [
        Case("jacobian-residue-without-token", lambda d, b: jac(d, b, fasta=write(d / "odd.faa", ">odd\nMKJV\n")),
             ("odd.faa", "'odd' residue 3 is 'J'", "no token for")),
        Case("jacobian-glm2-longer-than-its-context", lambda d, b: jac(
            d, b, fasta=write(d / "long.faa", ">long\n" + "MKVL" * 1100 + "\n"), model=copy(b, "glm2", d)),
             ("long.faa", "4,401 tokens", "this gLM2 reads at most")),
        Case("jacobian-fast-mode-without-fast", lambda d, b: jac(d, b, extra=("--fast-mode", "notebook")),
             ("--fast-mode goes with --fast",), status=2),
        Case("jacobian-empty-record", lambda d, b: jac(d, b, fasta=write(d / "e.faa", ">e\n>p\nMKV\n")),
             ("e.faa", "'e' has no sequence")),
        Case("jacobian-dna-for-esm2", lambda d, b: jac(d, b, fasta=write(d / "dna.fasta", ">igs\nACGTTACGTACGGA\n")),
             ("dna.fasta", "'igs' is DNA", "ESM2 reads proteins")),
        Case("jacobian-longer-than-the-context", lambda d, b: jac(d, b, fasta=write(
            d / "long.faa", ">long\n" + "MKVL" * 300 + "\n")), ("long.faa", "1,200 residues", "at most 1,022")),
        Case("jacobian-model-without-lm-head", lambda d, b: jac(d, b, model=shutil.copytree(
            TEST_DATA / "hf_esm_v4" / "model_bin", d / "esm_model")), ("esm_model", "no language-model head")),
        Case("jacobian-glm-checkpoint", lambda d, b: jac(d, b, model=copy(b, "glm", d)),
             ("glm", "a gLM checkpoint", "an ESM2 or a gLM2")),
        Case("jacobian-region-outside-the-contig", lambda d, b: region(d, b, copy(b, "el.zarr", d),
                                                                       "contig_1:3-100000"),
             ("el.zarr", "lies outside contig 'contig_1'")),
        Case("jacobian-region-unknown-contig", lambda d, b: region(d, b, copy(b, "el.zarr", d), "nowhere"),
             ("el.zarr", "no contig 'nowhere'")),
        Case("jacobian-store-without-region", lambda d, b: ["jacobian", copy(b, "el.zarr", d), "-m",
                                                            copy(b, "glm2", d), "-o", d / "c.npy"],
             ("--region", "required with an element store"), status=2),
        Case("jacobian-output-not-a-map", lambda d, b: jac(d, b, out="c.txt"), ("name the contact map",), status=2),
        Case("jacobian-missing-fasta", lambda d, b: jac(d, b, fasta=d / "absent.faa"), ("absent.faa", "no such file")),
    ]
    return c


def _contextualize_cases() -> list[Case]:
    def ctx(d, b, el=None, emb=None, model=None, extra=()):
        return ["contextualize", el or copy(b, "el.zarr", d), "-e", emb or copy(b, "emb.zarr", d), "-m",
                model or copy(b, "glm", d), "-o", d / "out.zarr", "--threads", "1", *extra]

    c = _store_input_cases("contextualize", lambda d, b, store: ctx(d, b, el=store))
    c += [
        Case("contextualize-model-not-a-checkpoint", lambda d, b: ctx(d, b, model=(d / "m").mkdir() or d / "m"),
             ("not a glmkit checkpoint",)),
        Case("contextualize-same-store-twice", lambda d, b: ["contextualize", copy(b, "el.zarr", d),
                                                             copy(b, "el.zarr", d, "again.zarr"), "-e",
                                                             copy(b, "emb.zarr", d), "-m", copy(b, "glm", d), "-o",
                                                             d / "out.zarr"],
             ("again.zarr", "the same element store as", "given twice")),
        Case("contextualize-embeddings-without-manifest", lambda d, b: ctx(d, b, emb=drop_attribute(
            copy(b, "emb.zarr", d), "integrity")), ("emb.zarr", "no integrity manifest", "glmkit.embeddings")),
        Case("contextualize-embeddings-of-another-model", lambda d, b: ctx(d, b, emb=copy(b, "other_emb.zarr", d)),
             ("other_emb.zarr", "trained on")),
        Case("contextualize-layer-out-of-range", lambda d, b: ctx(d, b, extra=("--layer", "9")), ("--layer 9",)),
        Case("contextualize-wrong-shape-tensor", lambda d, b: ctx(d, b, model=rewrite_checkpoint(
            copy(b, "glm", d), resized)), ("model.safetensors", "has shape")),
        Case("contextualize-damaged-checkpoint", lambda d, b: ctx(d, b, model=truncate_weights(copy(b, "glm", d))),
             ("model.safetensors", "damaged")),
        Case("contextualize-checkpoint-from-the-future", lambda d, b: ctx(d, b, model=edit_checkpoint_config(
            copy(b, "glm", d), schema_version=99)), ("checkpoint version 99", "upgrade glmkit")),
        Case("contextualize-config-not-a-glm", lambda d, b: ctx(d, b, model=edit_checkpoint_config(
            copy(b, "glm", d), config={"num_heads": "ten"})), ("config.json", "num_heads")),
        Case("contextualize-missing-embeddings", lambda d, b: ctx(d, b, emb=subset_embedding_store(
            b, d / "half.zarr")), ("half.zarr", "no embedding for")),
        Case("contextualize-output-is-input", lambda d, b: ["contextualize", copy(b, "el.zarr", d), "-e",
                                                            copy(b, "emb.zarr", d), "-m", copy(b, "glm", d),
                                                            "-o", d / "emb.zarr", "--force"],
             ("emb.zarr", "is also an input")),
    ]
    return c


def truncate_weights(folder: Path) -> Path:
    truncate_file(folder / "checkpoint" / "model.safetensors")
    return folder


def _validate_cases() -> list[Case]:
    c = []
    for store, array in STORES.items():
        for damage, (function, says) in DAMAGE.items():
            c.append(Case(f"validate-{store.split('.')[0]}-{damage}",
                          lambda d, b, store=store, array=array, function=function:
                          ["validate", function(copy(b, store, d), array)], (store, says)))
        c.append(Case(f"validate-{store.split('.')[0]}-from-the-future",
                      lambda d, b, store=store: ["validate", edit_attributes(copy(b, store, d), schema_version=99)],
                      (store, "version 99")))
    c.append(Case("validate-offsets-not-increasing", lambda d, b: ["validate", bad_offsets(copy(b, "el.zarr", d))],
                  ("el.zarr", "contigs/offsets", "not a valid offset table")))
    c.append(Case("validate-not-a-store", lambda d, b: ["validate", copy(b, "contigs.fna", d)],
                  ("contigs.fna", "not a glmkit store")))
    return c


def bad_offsets(store: Path) -> Path:
    """Offsets rewritten through zarr itself (so every checksum is right) to decrease: only meaning is wrong."""
    import zarr

    array = zarr.open_array(str(store / "contigs" / "offsets"), mode="r+")
    values = array[:]
    values[1], values[2] = values[2], values[1]
    array[:] = values
    meta = json.loads((store / "zarr.json").read_text())  # record the rewritten chunk's size, as a writer would
    meta["attributes"]["integrity"]["arrays"]["contigs/offsets"]["bytes"] = sum(
        f.stat().st_size for f in (store / "contigs" / "offsets" / "c").rglob("*") if f.is_file())
    (store / "zarr.json").write_text(json.dumps(meta))
    return store


class _RunsCode:
    """A pickle payload that would run a shell command when loaded (it must be refused, never run)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def _classifier_beside(glm_bin: Path, features: int) -> Path:
    """The release's operon_predictor.pkl, a scikit-learn logistic regression of ``features`` attention features."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    model = LogisticRegression().fit(rng.random((20, features)), np.arange(20) % 2)
    return _pickled(glm_bin.parent / "operon_predictor.pkl", model)


def _pickled(path: Path, obj) -> Path:
    import pickle

    path.write_bytes(pickle.dumps(obj))
    return path


def _import_export_cases() -> list[Case]:
    def imp(d, b, **replace):
        rel = copy(b, "release", d)
        for name, make in replace.items():
            make(rel / f"{name.replace('_', '.')}")
        return ["import-glm", rel / "glm.bin", "-o", d / "model"]

    def norm_of_8(path):
        import numpy as np

        _pickled(path, {"mean": np.zeros(8), "std": np.ones(8)})

    return [
        Case("import-glm-pca-runs-code", lambda d, b: imp(d, b, pca_pkl=lambda p: _pickled(p, _RunsCode(d / "ran"))),
             ("pca.pkl", "refused to load", "posix.system")),
        Case("import-glm-norm-of-other-dims", lambda d, b: imp(d, b, norm_pkl=norm_of_8), ("norm.pkl", "8 dimensions")),
        Case("import-glm-pca-missing", lambda d, b: imp(d, b, pca_pkl=lambda p: p.unlink()), ("pca.pkl", "no such file")),
        Case("import-glm-pca-not-a-pca", lambda d, b: imp(d, b, pca_pkl=lambda p: _pickled(p, [1, 2])),
             ("pca.pkl", "expected a scikit-learn PCA")),
        Case("import-glm-junk-weights", lambda d, b: imp(d, b, glm_bin=lambda p: write(p, b"junk")),
             ("glm.bin", "not a readable PyTorch state dict")),
        Case("import-glm-truncated-pickle", lambda d, b: imp(d, b, norm_pkl=lambda p: truncate_file(p)),
             ("norm.pkl", "not a readable pickle")),
        Case("import-glm-without-encoder-layer", lambda d, b: imp(d, b, glm_bin=lambda p: _edit_state(
            p, lambda st: {k: v for k, v in st.items() if "encoder.layer.0." not in k})),
             ("glm.bin", "not the gLM layout", "no tensor roberta.roberta.encoder.layer.0.")),
        Case("import-glm-glmkit-json-not-an-object", lambda d, b: imp(d, b, glmkit_json=lambda p: write(p, "[1, 2]")),
             ("glmkit.json", "not a JSON object")),
        Case("import-glm-zero-heads", lambda d, b: imp(d, b, glmkit_json=lambda p: _edit_json(
            p, lambda j: j["config"].update(num_heads=0))), ("glmkit.json", "num_heads = 0")),
        Case("import-glm-config-of-a-huge-model", lambda d, b: imp(d, b, glmkit_json=lambda p: _edit_json(
            p, lambda j: j["config"].update(hidden_size=32768, num_layers=64))),
             ("glmkit.json", "but", "tensors make it", "another model")),
        Case("import-glm-classifier-of-other-heads", lambda d, b: imp(d, b, glm_bin=lambda p: _classifier_beside(
            p, 190)), ("operon_predictor.pkl", "190 attention features", "2 layers x 4 heads = 8")),
        Case("import-glm-link-loop", lambda d, b: ["import-glm", _loop(d), "-o", d / "m"],
             ("loop1", "a symbolic link loop")),
        Case("export-glm-not-a-checkpoint", lambda d, b: ["export-glm", (d / "m").mkdir() or d / "m", "-o", d / "r"],
             ("not a glmkit checkpoint",)),
    ]


def _operon_cases() -> list[Case]:
    def pairs(d, rows):
        return write(d / "known.tsv", "gene_a\tgene_b\tlabel\n" + "".join(f"{a}\t{b}\t{y}\n" for a, b, y in rows))

    def fit(d, b, ctx="ctx_attention.zarr", known=None):
        return ["operons", "fit", copy(b, ctx, d), "-e", copy(b, "el.zarr", d), "--known",
                known or pairs(d, [("contig_1_1", "contig_1_2", 1), ("contig_1_2", "contig_1_3", 0)]),
                "-o", d / "c.safetensors"]

    def classifier(d, n):
        import numpy as np

        sys.path.insert(0, str(HERE.parent.parent))
        from glmkit.io.operon_model import write_classifier

        write_classifier(d / "wrong.safetensors", "attention", np.zeros(n), np.zeros(1), 19, 10)
        return d / "wrong.safetensors"

    def predict(d, b, clf):
        return ["operons", "predict", copy(b, "ctx_attention.zarr", d), "-e", copy(b, "el.zarr", d), "-c", clf,
                "-o", d / "pairs.tsv"]

    return [
        Case("operons-context-without-attention", lambda d, b: fit(d, b, ctx="ctx.zarr"),
             ("ctx.zarr", "no attention maps", "--attention")),
        Case("operons-known-genes-absent", lambda d, b: fit(d, b, known=pairs(d, [("x_1", "x_2", 1), ("y_1", "y_2", 0)])),
             ("known.tsv", "no neighbouring gene pair")),
        Case("operons-known-not-a-table", lambda d, b: fit(d, b, known=write(d / "known.txt", "a\tb\n")),
             ("known.txt", "neither RegulonDB OperonSet")),
        Case("operons-known-label-not-binary", lambda d, b: fit(d, b, known=pairs(d, [("contig_1_1", "contig_1_2", 2)])),
             ("known.tsv", "label '2' is not 0 or 1")),
        Case("operons-classifier-of-other-heads", lambda d, b: predict(d, b, classifier(d, 190)),
             ("wrong.safetensors", "a classifier of 190 features")),
        Case("operons-classifier-junk", lambda d, b: predict(d, b, write(d / "junk.safetensors", b"junk")),
             ("junk.safetensors", "not an operon classifier")),
        Case("operons-model-without-classifier", lambda d, b: predict(d, b, copy(b, "glm", d)),
             ("has no operon classifier",)),
    ]


def _paralog_cases() -> list[Case]:
    def records(b):
        text = (b / "proteins.faa").read_text()
        return [">" + r for r in text.split(">")[1:]]

    def match(d, b, queries=None, emb="emb.zarr", extra=()):
        recs = records(b)
        q = queries or write(d / "q.faa", "".join(recs[:4]))
        c = write(d / "c.faa", "".join(recs[4:12]))
        return ["paralog-match", q, c, "-e", copy(b, emb, d), "-m", copy(b, "glm", d), "-o", d / "m.tsv", *extra]

    def truth(d, b, partner):
        first = records(b)[0][1:].split()[0]
        return ("--truth", write(d / "truth.tsv", f"query\tpartner\n{first}\t{partner}\n"), "--cluster-id", "0")

    return [
        Case("paralog-match-embeddings-of-another-model", lambda d, b: match(d, b, emb="other_emb.zarr"),
             ("other_emb.zarr", "embeddings from")),
        Case("paralog-match-query-not-embedded",
             lambda d, b: match(d, b, queries=write(d / "q.faa", ">stranger\nMKVLAAGIVGLLLAAQ\n")),
             ("no embedding for query protein 'stranger'",)),
        Case("paralog-match-truth-unknown-partner", lambda d, b: match(d, b, extra=truth(d, b, "nobody")),
             ("truth.tsv", "partner 'nobody'")),
        Case("paralog-match-report-without-truth", lambda d, b: match(d, b, extra=("--report", d / "r.json")),
             ("--report", "goes with --truth"), status=2),
    ]


def _dedup_cases() -> list[Case]:
    def glmkit(*args):
        sys.path.insert(0, str(HERE.parent))
        from conftest import run

        result = run(*args, "-q")
        assert result.exit_code == 0, (args, result.stderr)

    def shares(d, b, n=2, keep=None):
        emb = copy(b, "emb.zarr", d)
        glmkit("dedup", "fit", emb, "-o", d / "c.zarr", "--level", "gene", "-k", "2", "--threads", "1")
        for k in range(1, n + 1):
            glmkit("dedup", "assign", emb, "-c", d / "c.zarr", "-o", d / f"a{k}", "--level", "gene",
                   "--shard", f"{k}/{n}")
        return [d / f"a{k}" for k in (keep or range(1, n + 1))]

    def prune(d, b, folders, centroids=None):
        return ["dedup", "prune", *folders, "-c", centroids or d / "c.zarr", "-o", d / "p"]

    def damaged(d, b):
        folders = shares(d, b, n=1)
        victim = sorted(folders[0].glob("b*.vector"))[0]
        victim.write_bytes(victim.read_bytes()[:-2])
        return prune(d, b, folders)

    def other_centroids(d, b):
        folders = shares(d, b, n=1)
        glmkit("dedup", "fit", copy(b, "other_emb.zarr", d), "-o", d / "other.zarr", "--level", "gene", "-k", "3")
        return prune(d, b, folders, d / "other.zarr")

    def semantic(d, b, source="emb.zarr", extra=("--level", "gene")):
        return ["dedup", "semantic", copy(b, source, d), "-o", d / "out", *extra]

    return [
        Case("dedup-input-not-a-store", lambda d, b: semantic(d, b, "contigs.fna"),
             ("contigs.fna", "not a context store", "or an embedding store")),
        Case("dedup-embedding-store-as-contigs", lambda d, b: semantic(d, b, extra=()),
             ("emb.zarr", "holds proteins, not contigs", "--level gene")),
        Case("dedup-more-clusters-than-items", lambda d, b: semantic(d, b, extra=("--level", "gene", "-k", "100000")),
             ("--clusters 100000 exceeds", "emb.zarr"), status=2),
        Case("dedup-assign-share-missing", lambda d, b: prune(d, b, shares(d, b, keep=[1])),
             ("assignment share 2/2 is missing",)),
        Case("dedup-assign-share-damaged", damaged, ("b00000.vector", "the manifest recorded", "damaged")),
        Case("dedup-prune-with-other-centroids", other_centroids, ("other centroids than", "other.zarr")),
        Case("dedup-assign-with-centroids-of-another-input", lambda d, b: (
            shares(d, b, n=1) and ["dedup", "assign", copy(b, "other_emb.zarr", d), "-c", d / "c.zarr", "-o",
                                   d / "x", "--level", "gene"]),
             ("c.zarr", "fitted on another input than", "other_emb.zarr")),
        Case("dedup-merge-not-a-share", lambda d, b: ["dedup", "merge", (d / "p1").mkdir() or d / "p1", "-o", d / "m"],
             ("p1", "no manifest.json")),
        Case("filter-keep-without-id-column", lambda d, b: ["filter", copy(b, "el.zarr", d), "-o", d / "o.zarr",
                                                            "--keep", write(d / "k.tsv", "name\tkeep_0.002\nx\t1\n")],
             ("k.tsv", "no 'id' column")),
        Case("filter-keep-not-binary", lambda d, b: ["filter", copy(b, "el.zarr", d), "-o", d / "o.zarr", "--keep",
                                                     write(d / "k.tsv", "id\tkeep_0.002\ncontig_1\tyes\n")],
             ("k.tsv", "row 1", "expected 1 or 0")),
        Case("dedup-proteins-duplicate-id", lambda d, b: ["dedup", "proteins", write(
            d / "p.faa", ">a\nMKVLAAG\n>a\nMKVLAAG\n"), "-o", d / "out"], ("p.faa", "duplicate protein id 'a'")),
        Case("dedup-proteins-preset-and-identity", lambda d, b: ["dedup", "proteins", copy(b, "proteins.faa", d), "-o",
                                                                 d / "out", "--preset", "prot50", "--min-seq-id", "0.5"],
             ("--min-seq-id", "not both"), status=2),
    ]


def _with_nan(d: Path, b: Path, kind: str) -> Path:
    """A copy of a model with one weight NaN, its files' checksums recorded again (a damaged training run, not a
    damaged file): a glmkit checkpoint folder, the exported glm.bin, or a fair-esm .pt."""
    import torch

    sys.path.insert(0, str(HERE.parent.parent))
    if kind == "checkpoint":
        from safetensors.torch import load_file, save_file

        from glmkit.io.files import file_sha256

        folder = copy(b, "glm", d) / "checkpoint"
        weights = load_file(str(folder / "model.safetensors"))
        weights["blocks.0.attention.query.weight"][0, 0] = float("nan")
        save_file(weights, str(folder / "model.safetensors"))
        meta = json.loads((folder / "config.json").read_text())
        meta["files"]["model.safetensors"] = file_sha256(folder / "model.safetensors")
        (folder / "config.json").write_text(json.dumps(meta))
        return folder.parent
    if kind == "release":
        rel = copy(b, "release", d)
        state = torch.load(rel / "glm.bin", weights_only=True)
        state["dense.weight"][0, 0] = float("inf")
        torch.save(state, rel / "glm.bin")
        return rel / "glm.bin"
    path = copy(b, "esm.pt", d)
    model = torch.load(path, weights_only=False)
    name = next(k for k in model["model"] if k.endswith("fc1.weight"))
    model["model"][name][0, 0] = float("nan")
    torch.save(model, path)
    return path


def _edit_state(path: Path, change: Callable) -> Path:
    import torch

    torch.save(change(torch.load(path, weights_only=True)), path)
    return path


def _edit_json(path: Path, change: Callable) -> Path:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    return path


def _loop(d: Path) -> Path:
    (d / "loop1").symlink_to(d / "loop2")
    (d / "loop2").symlink_to(d / "loop1")
    return d / "loop1"


def _esm_with_wrong_shape(d: Path, b: Path) -> Path:
    import torch

    path = copy(b, "esm.pt", d)
    model = torch.load(path, weights_only=False)
    name = next(k for k in model["model"] if k.endswith("fc1.weight"))
    model["model"][name] = torch.zeros(model["model"][name].shape[0] + 1, model["model"][name].shape[1])
    torch.save(model, path)
    return path


def _config_cases() -> list[Case]:
    """Model configurations that cannot be built, or claim a model other than their weights: checked before
    anything is allocated (a config claiming 12 GB is refused by its first wrong shape)."""
    def glm2_claiming(d, b, **config):
        folder = copy(b, "glm2", d) / "checkpoint"
        return _edit_json(folder / "config.json", lambda j: j["config"].update(**config)).parent.parent

    def glm_claiming(d, b, **config):
        folder = copy(b, "glm", d) / "checkpoint"
        return _edit_json(folder / "config.json", lambda j: j["config"].update(**config)).parent.parent

    def ctx(d, b, model):
        return ["contextualize", copy(b, "el.zarr", d), "-e", copy(b, "emb.zarr", d), "-m", model, "-o",
                d / "out.zarr"]

    return [
        Case("embed-fair-esm-wrong-shape", lambda d, b: ["embed", copy(b, "proteins.faa", d), "-o", d / "o.zarr",
                                                         "-m", _esm_with_wrong_shape(d, b)],
             ("esm.pt", "fc1.weight has shape")),
        Case("contextualize-glm-zero-heads", lambda d, b: ctx(d, b, glm_claiming(d, b, num_heads=0)),
             ("config.json", "num_heads = 0")),
        Case("contextualize-glm-config-of-a-huge-model", lambda d, b: ctx(d, b, glm_claiming(
            d, b, hidden_size=32768, num_layers=64, num_heads=64)), ("model.safetensors", "has shape")),
        Case("contextualize-glm2-zero-heads", lambda d, b: ["contextualize", copy(b, "el.zarr", d), "-m",
                                                            glm2_claiming(d, b, heads=0), "-o", d / "out.zarr"],
             ("config.json", "heads = 0")),
        Case("contextualize-glm2-config-of-a-huge-model", lambda d, b: [
            "contextualize", copy(b, "el.zarr", d), "-m", glm2_claiming(d, b, dim=32768, depth=64, heads=64), "-o",
            d / "out.zarr"], ("model.safetensors", "has shape")),
    ]


def _genbank(b: Path) -> str:
    """A GenBank file of the base's first contig, by Biopython's writer."""
    import io

    from Bio import SeqIO

    record = next(SeqIO.parse(b / "contigs.fna", "fasta"))
    record.annotations["molecule_type"] = "DNA"
    text = io.StringIO()
    SeqIO.write([record], text, "genbank")
    return text.getvalue()


def _hostile_folder_cases() -> list[Case]:
    """A neighbour in a shared folder plants a symbolic link at the lock name of the output, pointing to a file
    of the user's: every command that writes refuses it, and the file keeps its content (nothing is written
    through a link glmkit did not make)."""
    def planted(command):
        def build(d, b):
            args, output = command(d, b)
            (d / "notes.txt").write_text("precious\n")
            (d / f".{Path(output).name}.lock").symlink_to(d / "notes.txt")
            return args
        return build

    records = lambda b: [">" + r for r in (b / "proteins.faa").read_text().split(">")[1:]]  # noqa: E731
    commands = {
        "call": lambda d, b: (["call", copy(b, "contigs.fna", d), "-o", d / "o.zarr"], "o.zarr"),
        "genes": lambda d, b: (["genes", write(d / "a.gbk", _genbank(b)), "-o", d / "o.zarr"], "o.zarr"),
        "filter": lambda d, b: (["filter", copy(b, "el.zarr", d), "-o", d / "o.zarr"], "o.zarr"),
        "embed": lambda d, b: (["embed", copy(b, "proteins.faa", d), "-m", copy(b, "esm.pt", d), "-o", d / "o.zarr"],
                               "o.zarr"),
        "pretrain": lambda d, b: (["pretrain", copy(b, "el.zarr", d), "-e", copy(b, "emb.zarr", d), "-o", d / "m",
                                   "--preset", "tiny", "--max-steps", "1", "--batch-size", "2"], "m"),
        "contextualize": lambda d, b: (["contextualize", copy(b, "el.zarr", d), "-e", copy(b, "emb.zarr", d), "-m",
                                        copy(b, "glm", d), "-o", d / "o.zarr"], "o.zarr"),
        "jacobian": lambda d, b: (["jacobian", write(d / "p.faa", ">a\nMKVLAAG\n"), "-m", copy(b, "esm.pt", d),
                                   "-o", d / "o.npy", "--fast"], "o.npy"),
        "dedup": lambda d, b: (["dedup", "semantic", copy(b, "ctx.zarr", d), "-o", d / "o", "-k", "2"], "o"),
        "operons": lambda d, b: (["operons", "eval", copy(b, "ctx_attention.zarr", d), "-e", copy(b, "el.zarr", d),
                                  "--known", write(d / "k.tsv", "gene_a\tgene_b\tlabel\ncontig_1_1\tcontig_1_2\t1\n"),
                                  "-o", d / "o"], "o"),
        "paralog-match": lambda d, b: (["paralog-match", write(d / "q.faa", "".join(records(b)[:2])),
                                        write(d / "c.faa", "".join(records(b)[2:6])), "-e", copy(b, "emb.zarr", d),
                                        "-m", copy(b, "glm", d), "-o", d / "o.tsv"], "o.tsv"),
        "import-glm": lambda d, b: (["import-glm", copy(b, "release", d) / "glm.bin", "-o", d / "m"], "m"),
        "export-glm": lambda d, b: (["export-glm", copy(b, "glm", d), "-o", d / "r"], "r"),
        "demo": lambda d, b: (["demo", d / "demo", "--quick"], "demo"),
    }
    return [Case(f"{name}-lock-planted-as-a-link", planted(command), (".lock", "is a symbolic link", "did not make"))
            for name, command in commands.items()]


def _output_over_input_cases() -> list[Case]:
    """Every path a command reads is an input of its output claim — models, classifiers, id lists, annotations,
    defaults found beside another file — so that no output, even with --force, overwrites one."""
    def fitted(d, b):
        sys.path.insert(0, str(HERE.parent))
        from conftest import run

        known = write(d / "known.tsv", "gene_a\tgene_b\tlabel\ncontig_1_1\tcontig_1_2\t1\ncontig_1_2\tcontig_1_3\t0\n"
                      "contig_2_1\tcontig_2_2\t1\ncontig_2_2\tcontig_2_3\t0\n")
        ctx, el = copy(b, "ctx_attention.zarr", d), copy(b, "el.zarr", d)
        assert run("operons", "fit", ctx, "-e", el, "--known", known, "-o", d / "clf.safetensors", "-q").exit_code == 0
        return ctx, el, known, d / "clf.safetensors"

    def predict_over_classifier(d, b):
        ctx, el, _, clf = fitted(d, b)
        return ["operons", "predict", ctx, "-e", el, "-c", clf, "-o", clf, "--force"]

    def fit_over_annotation(d, b):
        ctx, el, known, _ = fitted(d, b)
        gff = write(d / "genes.gff", "##gff-version 3\n")
        return ["operons", "fit", ctx, "-e", el, "--known", known, "--annotation", gff, "-o", gff, "--force"]

    def import_ids(d, b):
        write(d / "e.npy", b"\x93NUMPY")
        return ["embed", copy(b, "proteins.faa", d), "-o", d / "o.zarr", "--import-embeddings", d / "e.npy",
                "--import-ids", write(d / "ids.txt", "a\n"), "--import-model", "esm2_t6_8M_UR50D",
                "--map", d / "ids.txt", "--force"]

    return [
        Case("contextualize-nan-weights", lambda d, b: ["contextualize", copy(b, "el.zarr", d), "-e",
                                                        copy(b, "emb.zarr", d), "-m", _with_nan(d, b, "checkpoint"),
                                                        "-o", d / "out.zarr"],
             ("model.safetensors", "tensor blocks.0.attention.query.weight holds NaN or infinite values")),
        Case("import-glm-inf-weights", lambda d, b: ["import-glm", _with_nan(d, b, "release"), "-o", d / "m"],
             ("glm.bin", "tensor dense.weight holds NaN or infinite values")),
        Case("embed-nan-weights", lambda d, b: ["embed", copy(b, "proteins.faa", d), "-o", d / "o.zarr", "-m",
                                                _with_nan(d, b, "esm")], ("esm.pt", "holds NaN or infinite values")),
        Case("embed-map-over-the-model", lambda d, b: ["embed", copy(b, "el.zarr", d), "-o", d / "o.zarr", "-m",
                                                       copy(b, "esm.pt", d), "--map", d / "esm.pt", "--force"],
             ("esm.pt", "is also an input")),
        Case("embed-map-over-the-import-ids", import_ids, ("ids.txt", "is also an input")),
        Case("jacobian-png-over-the-model", lambda d, b: ["jacobian", write(d / "pair.faa", ">a\nMKVLAAG\n"), "-m",
                                                          copy(b, "esm.pt", d), "-o", d / "c.npy", "--png",
                                                          d / "esm.pt", "--force"], ("esm.pt", "is also an input")),
        Case("operons-predict-over-the-classifier", predict_over_classifier, ("clf.safetensors", "is also an input")),
        Case("operons-fit-over-the-annotation", fit_over_annotation, ("genes.gff", "is also an input")),
        Case("import-glm-over-the-default-norm", lambda d, b: ["import-glm", copy(b, "release", d) / "glm.bin", "-o",
                                                               d / "release" / "norm.pkl", "--force"],
             ("norm.pkl", "is also an input")),
    ]


CASES: list[Case] = [*_hostile_folder_cases(), *_config_cases(), *_output_over_input_cases(),
                     *_call_cases(), *_genes_cases(), *_filter_cases(), *_embed_cases(), *_pretrain_cases(),
                     *_contextualize_cases(), *_glm2_cases(), *_jacobian_cases(), *_validate_cases(), *_import_export_cases(),
                     *_operon_cases(), *_paralog_cases(), *_dedup_cases()]


def main() -> None:
    out = Path(sys.argv[1])
    base = build_base(out / "_base")
    for case in CASES:
        folder = out / case.name
        folder.mkdir(parents=True, exist_ok=True)
        args = case.build(folder, base)
        (folder / "command.txt").write_text(" ".join(["glmkit", *map(str, args)]) + "\n")
    print(f"{len(CASES)} cases in {out}")


if __name__ == "__main__":
    main()
