"""`glmkit jacobian`: categorical-Jacobian contact maps from ESM2 or gLM2, in bounded memory.

The algorithm (Zhang et al. 2024, as the gLM2 and ESM notebooks compute it):
every position i of the input substituted by every token a of its modality,
J[i, a, j, b] = logits(mutant)[j, b] − logits(wild type)[j, b]; J centred on
each of its 4 axes; the Frobenius norm over the token axes a, b; symmetrised;
the diagonal zeroed, the average product correction (APC) subtracted, the
diagonal zeroed again. For ESM2 (20 amino acids in and out) J itself is
symmetrised before the norm, J ↔ J.transpose(j, b, i, a), as the ESM notebook
does; for gLM2 the map is symmetrised after it, and a substitution of the
other modality (a nucleotide at an amino-acid position, or the reverse) or of
a strand, `<unk>` or X/B/U/Z/O position counts as zero, as the gLM2 notebook
does — glmkit simply does not run those mutants. `--fast` substitutes `<mask>`
only; `--fast-mode notebook` gives the gLM2 notebook's fast map from the same
mutants (GLM2Scorer.row_weights).

How it stays bounded: positions are taken in blocks (`--block`); each block's
mutants run in batches (`--batch-size` sequences per forward pass, inference
mode, autocast on CUDA; on CPU, `--threads` passes side by side, one thread
each); the block's slice of J, centred on the axes it holds
whole (a, j, b), goes to the work folder `.OUTPUT.work/` as one row of chunks
of a Zarr array, and the block is marked done: a killed run resumes from the
blocks it finished. The centring over i needs every block, so it comes last,
from the mean over blocks; the norms are then taken block pair by block pair
(both J[P, :, Q, :] and J[Q, :, P, :] for the symmetrised J), reading two
chunks at a time. Memory holds a batch, two chunks and the L x L map, never
the L x A x L x A tensor; the work folder holds it on disk (L² A² x 4 bytes:
92 MB for 240 residues with ESM2), checked for room before the run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from glmkit.errors import GlmkitError, GlmkitUsageError
from glmkit.io.store import DamagedStoreError
from glmkit.io.files import InputFile, atomic_outputs, claim_outputs, planned_work_folder, remove
from glmkit.log import progress
from glmkit.options import JacobianOptions

log = logging.getLogger("glmkit")
STANDARD_AMINO_ACIDS = "LAGVSERTIDPKQNFYMHWC"  # the 20 substitutes, in both models' vocabulary order
# On CPU, --threads forward passes side by side, one thread each, instead of each pass split over the threads:
# a pass of a 240-residue ESM2 (6 layers, 320 wide) is too small to keep two threads busy (15 % faster, 37 against
# 43 ms a sequence; bench/tricks.py jacobian-passes)
PASSES_SIDE_BY_SIDE = True
WORK_FORMAT = 2                                # work arrays with a crc32c per chunk (1: none, never resumed)
REPORT_OPTIONS = ("top", "min_separation", "tsv", "png")   # read from the finished map only


@dataclass
class Query:
    """What the model reads and what the map's rows are."""
    tokens: np.ndarray              # (T,) the model's token ids, special tokens included
    positions: np.ndarray           # (L,) indices into tokens: the map's positions
    element: np.ndarray             # (L,) element (record) number, -1 for special and strand tokens
    residue: np.ndarray             # (L,) 1-based residue in its element, 0 for special and strand tokens
    labels: list                    # (L,) each position's token as text
    element_names: list             # element (record) names


# -- models ---------------------------------------------------------------------------------------------------

class ESM2Scorer:
    """ESM2 with its language-model head: positions are the residues (not <cls>/<eos>), 20 amino acids in and out,
    J symmetrised before the norm."""
    kind, symmetrise_jacobian = "ESM2", True

    def __init__(self, loaded, fast: bool):
        from glmkit.models.esm2.tokens import ALPHABET, MASK

        self.model, self.name, self.identity = loaded.model, loaded.name, {"name": loaded.name,
                                                                             "sha256": loaded.sha256}
        if self.model.lm_head is None:
            raise GlmkitError(f"{loaded.source}: this ESM2 checkpoint has no language-model head (an embeddings-only "
                              f"model); the categorical Jacobian needs the model's token predictions")
        self.index = {t: i for i, t in enumerate(ALPHABET)}
        self.outputs = np.array([self.index[a] for a in STANDARD_AMINO_ACIDS])
        self.substitutes = np.array([MASK]) if fast else self.outputs
        self.symmetrise_jacobian = not fast
        self.limit = 1022

    def query(self, elements: list[tuple[str, bytes, int, bool]], where: str) -> Query:
        from glmkit.models.esm2.tokens import CLS, EOS

        tokens, element, residue, labels = [CLS], [], [], []
        for k, (name, sequence, _strand, is_protein) in enumerate(elements):
            if not is_protein:
                raise GlmkitError(f"{where}: '{name}' is DNA; ESM2 reads proteins (use a gLM2 for intergenic DNA)")
            for r, letter in enumerate(sequence.decode(), 1):
                if letter not in self.index:
                    raise GlmkitError(f"{where}: '{name}' residue {r} is '{letter}', which ESM2 has no token for")
                tokens.append(self.index[letter])
                element.append(k)
                residue.append(r)
                labels.append(letter)
        if len(labels) > self.limit:
            raise GlmkitError(f"{where}: {len(labels):,} residues; ESM2 reads at most {self.limit:,} (its training "
                              f"context): take fewer records or a shorter --region")
        tokens.append(EOS)
        return Query(np.array(tokens), np.arange(1, len(labels) + 1), np.array(element), np.array(residue), labels,
                     [e[0] for e in elements])

    def valid(self, query: Query) -> np.ndarray:
        return np.ones((len(query.positions), len(self.substitutes)), dtype=bool)

    def row_weights(self, query: Query) -> None:   # --fast-mode notebook: the ESM notebook's --fast is glmkit's
        return None

    def logits(self, tokens):
        return self.model.logits(tokens)


class GLM2Scorer:
    """gLM2: positions are every token (as the gLM2 notebook's map), 4 nucleotides and 20 amino acids in and out;
    only substitutions of a position's own modality run; the map is symmetrised after the norm. The input is
    tokenised as the model was trained: a published folder as the published tokenizer reads the text (no `<cls>`,
    letters outside the vocabulary as `<unk>`)."""
    kind, symmetrise_jacobian = "gLM2", False

    def __init__(self, loaded, fast: bool, fast_mode: str = "glmkit"):
        from glmkit.models.glm2.tokens import ID, MASK

        self.model, self.tokens = loaded.model, loaded.tokens
        self.name = str(loaded.folder)
        self.identity = {"files": loaded.meta.get("files"), "tokens": loaded.tokens.record()}
        self.id = ID
        self.nucleotides = np.array([ID[t] for t in "atcg"])
        self.amino_acids = np.array([ID[a] for a in STANDARD_AMINO_ACIDS])
        self.outputs = np.concatenate([self.nucleotides, self.amino_acids])
        self.substitutes = np.array([MASK]) if fast else self.outputs
        self.fast, self.spread_mask = fast, fast and fast_mode == "notebook"
        self.limit = int(loaded.meta.get("options", {}).get("context", 4096))

    def query(self, elements: list[tuple[str, bytes, int, bool]], where: str) -> Query:
        from glmkit.models.glm2.tokens import CLS, UNK, VOCAB, element_tokens

        tokens, element, residue = ([CLS], [-1], [0]) if self.tokens.cls else ([], [], [])
        for k, (name, sequence, strand, is_protein) in enumerate(elements):
            ids = element_tokens(sequence, strand, is_protein, self.tokens)
            unknown = np.flatnonzero(ids[1:] == UNK)
            if len(unknown):   # the published tokenizer's reading; the map's rows there are zero, as strand tokens'
                r = int(unknown[0])
                more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
                log.warning(f"jacobian: {where}: '{name}' {'residue' if is_protein else 'base'} {r + 1} is "
                            f"'{chr(sequence[r])}'{more}, which gLM2 reads as <unk>, as its tokenizer does")
            tokens.extend(ids.tolist())
            element.extend([-1] + [k] * len(sequence))
            residue.extend(range(len(sequence) + 1))
        if len(tokens) > self.limit:
            raise GlmkitError(f"{where}: {len(tokens):,} tokens; this gLM2 reads at most {self.limit:,}: take fewer "
                              f"records or a shorter --region")
        tokens = np.array(tokens)
        return Query(tokens, np.arange(len(tokens)), np.array(element), np.array(residue),
                     [VOCAB[t] for t in tokens], [e[0] for e in elements])

    def modality(self, query: Query) -> tuple[np.ndarray, np.ndarray]:
        """(is a nucleotide, is one of the 20 amino acids) per position: the notebook's NUC_TOKENS and AA_TOKENS
        (X, B, U, Z, O and <unk> positions, like special and strand tokens, are neither)."""
        t = query.tokens[query.positions]
        return np.isin(t, self.nucleotides), np.isin(t, self.amino_acids)

    def valid(self, query: Query) -> np.ndarray:
        is_nt, is_aa = self.modality(query)
        if self.fast:
            return (is_nt | is_aa)[:, None]
        subs = self.substitutes
        return (is_nt[:, None] & np.isin(subs, self.nucleotides)[None]) | \
            (is_aa[:, None] & np.isin(subs, self.amino_acids)[None])

    def row_weights(self, query: Query) -> np.ndarray | None:
        """--fast-mode notebook: the notebook copies a position's <mask> row to each of its modality's substitutes
        (zeros at the other's) before centring; centred on that axis, the amino-acid rows are v ⊗ d and the
        nucleotide rows -v ⊗ d, |v| = sqrt(20 x 4 / 24) = sqrt(10/3). So its map is glmkit's computed from the
        <mask> rows times sqrt(10/3), nucleotide rows negated: the same work and disk as glmkit's --fast."""
        if not self.spread_mask:
            return None
        n_nt, n_aa = len(self.nucleotides), len(self.amino_acids)
        is_nt, is_aa = self.modality(query)
        return np.sqrt(n_nt * n_aa / (n_nt + n_aa)) * (is_aa.astype(np.float32) - is_nt)

    def logits(self, tokens):
        import torch

        return self.model(tokens, torch.ones_like(tokens))[0]


def load_scorer(model_spec: str, fast: bool, fast_mode: str = "glmkit"):
    """The scorer of a model folder's family (a family that predicts tokens), else ESM2's."""
    from glmkit.models.registry import family_of

    path = Path(model_spec)
    scorers = {"gLM2": GLM2Scorer}   # families whose models predict tokens
    if path.exists() and family_of(path).architecture in scorers:
        spec = family_of(path)
        return scorers[spec.architecture](spec.part("weights").load(path), fast, fast_mode)
    if path.is_dir() and ((path / "checkpoint" / "config.json").exists() or (path / "normalization.safetensors")
                          .exists()):
        raise GlmkitError(f"{model_spec}: a gLM checkpoint; the Jacobian needs a model that predicts tokens "
                          f"(an ESM2 or a gLM2)")
    from glmkit.models.esm2.weights import load_esm2

    return ESM2Scorer(load_esm2(model_spec), fast)


# -- inputs ---------------------------------------------------------------------------------------------------

def read_elements(input_path: str, region: str | None) -> tuple[list[tuple[str, bytes, int, bool]], dict]:
    """(name, sequence, strand, is_protein) per element, and the input's record for the plan."""
    from glmkit.io.store import store_record, store_schema

    if store_schema(input_path) == "glmkit.elements":
        if not region:
            raise GlmkitUsageError("--region CONTIG[:FIRST-LAST] is required with an element store")
        return _region(input_path, region), store_record(input_path)
    if region:
        raise GlmkitUsageError("--region goes with an element store input, not a FASTA file")
    from glmkit.io.fasta import read_fasta

    source = InputFile(input_path)
    source.check()
    elements = []
    for record in read_fasta(source, None):
        if record.sequence.endswith(b"*"):   # a stop codon, as `glmkit call --proteins` and Prodigal write them
            record = replace(record, sequence=record.sequence[:-1])
        letters = set(record.sequence)
        is_dna = letters <= set(b"ACGTUN") and len(record.sequence) >= 10
        if not is_dna and not letters <= set(b"ACDEFGHIKLMNPQRSTVWYXBUZOJ*"):
            bad = next(i for i, c in enumerate(record.sequence) if c not in b"ACDEFGHIKLMNPQRSTVWYXBUZOJ*")
            raise GlmkitError(f"{input_path}: '{record.name}' position {bad + 1} is "
                              f"'{chr(record.sequence[bad])}', neither an amino acid nor a nucleotide")
        elements.append((record.name, record.sequence.replace(b"U", b"T") if is_dna else record.sequence, 1,
                         not is_dna))
    return elements, {"path": input_path, "sha256": source.sha256}


def _region(store_path: str, region: str) -> list[tuple[str, bytes, int, bool]]:
    from glmkit.io.elements import CDS, ElementStore

    store = ElementStore(store_path)
    names = store.group["contigs/name"][:]
    # a filtered store's names hold ':' themselves (contig:start-end): the whole text names a contig first
    name, span = (region, "") if (names == region).any() else \
        (region.rpartition(":")[0], region.rpartition(":")[2]) if ":" in region else (region, "")
    hit = np.flatnonzero(names == name)
    if not len(hit):
        raise GlmkitError(f"{store_path}: no contig '{name}' (--region)")
    batch = store.read(int(hit[0]), int(hit[0]) + 1)
    n = int(batch.counts[0])
    try:
        first, last = (int(x) for x in span.split("-")) if span else (1, n)
    except ValueError:
        raise GlmkitUsageError(f"--region {region}: expected CONTIG or CONTIG:FIRST-LAST (element numbers)") from None
    if not 1 <= first <= last <= n:
        raise GlmkitError(f"{store_path}: --region {region} lies outside contig '{name}' (elements 1 to {n})")
    e = batch.elements
    return [(str(e["id"][i]), e["aa"][i] if e["type"][i] == CDS else e["nt"][i], int(e["strand"][i]),
             bool(e["type"][i] == CDS)) for i in range(first - 1, last)]


# -- the computation ------------------------------------------------------------------------------------------

def run_jacobian(input_path: str, model_spec: str, output: str, options: JacobianOptions = JacobianOptions(),
                 force: bool = False) -> dict:
    if not output.endswith((".npy", ".zarr")):
        raise GlmkitUsageError(f"--output {output}: name the contact map .npy or .zarr")
    stem = output[:-len(Path(output).suffix)]
    tsv, png = options.tsv or f"{stem}.tsv", options.png or f"{stem}.png"
    with claim_outputs([output, tsv, png], force, [input_path, model_spec]):   # a model named by path is an input
        return _jacobian(input_path, model_spec, output, tsv, png, options, force)


def _jacobian(input_path, model_spec, output, tsv, png, options: JacobianOptions, force: bool) -> dict:
    import torch

    from glmkit.resources import release_freed_memory
    from glmkit.models.device import resolve_device, resolve_precision, torch_threads

    if options.fast_mode != "glmkit" and not options.fast:
        raise GlmkitUsageError("--fast-mode goes with --fast")
    elements, record = read_elements(input_path, options.region)
    scorer = load_scorer(model_spec, options.fast, options.fast_mode)
    query = scorer.query(elements, input_path)
    device = resolve_device(options.device)
    amp = resolve_precision(options.precision, device)
    scorer.model.to(device)
    release_freed_memory()   # the loader's transient copies: the batches need far less than they took
    cpu = device.type == "cpu"
    passes = max(1, options.threads) if cpu and PASSES_SIDE_BY_SIDE else 1
    batch_size = options.batch_size or (64 if not cpu else 1 if passes > 1 else 3)
    L, A, B = len(query.positions), len(scorer.substitutes), len(scorer.outputs)
    options = replace(options, block=max(1, min(options.block, L)))   # a block never larger than the input
    # the plan: everything that changes a saved block (precision, batch size and threads change its last bits);
    # only what is read from the finished map (its TSV and picture) is left out
    computing = {k: v for k, v in asdict(options).items() if k not in REPORT_OPTIONS}
    plan = hashlib.sha256(json.dumps([WORK_FORMAT, record, scorer.identity, computing, str(device), str(amp),
                                      query.tokens.tolist()]).encode()).hexdigest()
    work, resumed = planned_work_folder(output, plan)
    if resumed:
        log.info(f"jacobian: resuming from {work} ({len(list(work.glob('done-*')))} blocks done)")
    need = L * A * L * B * 4
    free = shutil.disk_usage(work).free
    if need > free:
        raise GlmkitError(f"{work}: the Jacobian of {L:,} positions needs {need / 1e9:.1f} GB of work space; "
                          f"{free / 1e9:.1f} GB are free (try --fast, or a shorter input)")
    try:
        with torch_threads(1 if passes > 1 else options.threads) if cpu else contextlib.nullcontext():
            z = _open_work_array(work, (L, A, L, B), options.block)
            tokens = torch.from_numpy(query.tokens).to(device)
            with torch.inference_mode(), torch.autocast(device.type, dtype=amp, enabled=amp != torch.float32):
                wild = scorer.logits(tokens[None])[0].float()[query.positions][:, scorer.outputs]       # (L, B)
                valid = scorer.valid(query)
                blocks = range(0, L, options.block)
                with progress(total=L, desc="jacobian", unit="positions") as bar:
                    for b0 in blocks:
                        b1 = min(b0 + options.block, L)
                        done = work / f"done-{b0:08d}"
                        if not done.exists():
                            z[b0:b1] = _block(scorer, query, tokens, wild, valid, b0, b1, batch_size, passes, amp)
                            done.touch()
                        bar.update(b1 - b0)
            del tokens, wild
            scorer.model = None         # what follows needs no model: its weights and the batches' buffers go
            release_freed_memory()      # back to the OS before the norms and the picture, not on top of them
            try:
                contacts = contacts_from_work(verified_work_array(work), options.block, scorer.symmetrise_jacobian)
            except DamagedStoreError as e:   # a saved block was changed: never used; the next run recomputes all
                remove(work)
                raise GlmkitError(f"{e}; the work folder was discarded: run the same command again") from None
        summary = _write(output, tsv, png, force, contacts, query, scorer, options, record, model_spec)
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt):
            from glmkit.stop import with_hint

            raise with_hint(e, f"finished blocks are kept in {work}: the same command resumes from them") from None
        raise
    remove(work)
    log.info(f"jacobian: {L:,} positions x {A} substitutes with {scorer.kind} {scorer.name}; "
             f"top contact {summary['top_value']:.3g}" + (" (inter-element)" if summary["top_inter"] else ""))
    return summary


def _open_work_array(work: Path, shape: tuple, block: int):
    """The work array: uncompressed, each chunk ending in its crc32c and every chunk written, as stores are, so
    that a damaged or missing block is found when read (verified_work_array), not taken for zeros."""
    import zarr

    path = work / "jacobian.zarr"
    if path.exists():
        return zarr.open_array(str(path), mode="r+")
    L, A, _, B = shape
    return zarr.create_array(str(path), shape=shape, chunks=(block, A, block, B), dtype="float32",
                             compressors=(zarr.codecs.Crc32cCodec(),), fill_value=0.0,
                             config={"write_empty_chunks": True})


def verified_work_array(work: Path):
    """The finished work array, read through the verifying store: a block changed or lost since it was saved is a
    DamagedStoreError naming it."""
    import zarr

    from glmkit.io.store import verified_store

    return zarr.open_array(store=verified_store(work / "jacobian.zarr", str(work)), mode="r")


def _block(scorer, query: Query, tokens, wild, valid: np.ndarray, b0: int, b1: int, batch_size: int, passes: int,
           amp) -> np.ndarray:
    """J[b0:b1] centred on its a, j and b axes: (b1 - b0, A, L, B) float32. ``passes`` forward passes run side by
    side, each on its own thread."""
    import torch

    from glmkit.resources import ordered_map

    subs = scorer.substitutes
    L, A = len(query.positions), len(subs)
    out = torch.zeros((b1 - b0, A, L, len(scorer.outputs)), dtype=torch.float32)
    positions = query.tokens[query.positions]
    weights = scorer.row_weights(query)
    # mutants that change something and count: substituting a token by itself gives exactly 0
    mutants = [(i, a) for i in range(b0, b1) for a in range(A) if valid[i, a] and subs[a] != positions[i]]
    batches = [mutants[k:k + batch_size] for k in range(0, len(mutants), batch_size)]

    def delta(part):   # inference and autocast modes are per thread: set in each
        with torch.inference_mode(), torch.autocast(tokens.device.type, dtype=amp, enabled=amp != torch.float32):
            x = tokens.repeat(len(part), 1)
            rows = torch.arange(len(part), device=x.device)
            x[rows, torch.tensor([int(query.positions[i]) for i, _ in part], device=x.device)] = \
                torch.tensor([int(subs[a]) for _, a in part], device=x.device)
            f = scorer.logits(x).float()[:, query.positions][:, :, scorer.outputs]                  # (n, L, B)
            return (f - wild[None]).cpu()

    for part, d in zip(batches, ordered_map(delta, batches, passes)):
        for r, (i, a) in enumerate(part):
            out[i - b0, a] = d[r] if weights is None else d[r] * float(weights[i])
    for axis in (1, 2, 3):  # centre on a, j, b (the axes this block holds whole); an axis of one (--fast) stays
        if out.shape[axis] > 1:
            out -= out.mean(axis, keepdim=True)
    return out.numpy()


def contacts_from_work(z, block: int, symmetrise_jacobian: bool) -> np.ndarray:
    """The contact map from the blocks of the centred-on-(a, j, b) Jacobian: centred on i (the mean over all
    blocks), normed over the token axes, symmetrised, diagonal zeroed, APC."""
    L = z.shape[0]
    starts = list(range(0, L, block))
    mean = np.zeros(z.shape[1:], np.float64)                                  # (A, L, B): the mean over i
    for b0 in starts:
        mean += z[b0:b0 + block].sum(0, dtype=np.float64)
    mean = (mean / L).astype(np.float32)
    contacts = np.zeros((L, L), np.float64)
    if symmetrise_jacobian:  # || (X[i,:,j,:] + X[j,:,i,:]^T) / 2 ||, block pair by block pair
        for p in starts:
            for q in starts:
                if q < p:
                    continue
                xpq = z[p:p + block, :, q:q + block] - mean[None, :, q:q + block]         # (bp, A, bq, B)
                xqp = z[q:q + block, :, p:p + block] - mean[None, :, p:p + block]         # (bq, A, bp, B)
                sym = (xpq + xqp.transpose(2, 3, 0, 1)) / 2
                norm = np.sqrt(np.square(sym, dtype=np.float64).sum((1, 3)))
                contacts[p:p + block, q:q + block] = norm
                contacts[q:q + block, p:p + block] = norm.T
    else:
        for p in starts:
            x = z[p:p + block] - mean[None]                                                  # (bp, A, L, B)
            contacts[p:p + block] = np.sqrt(np.square(x, dtype=np.float64).sum((1, 3)))
        contacts = (contacts + contacts.T) / 2
    np.fill_diagonal(contacts, 0)
    total = contacts.sum()
    if total > 0:
        contacts -= contacts.sum(0, keepdims=True) * contacts.sum(1, keepdims=True) / total
    np.fill_diagonal(contacts, 0)
    return contacts.astype(np.float32)


# -- outputs ----------------------------------------------------------------------------------------------------

def top_contacts(contacts: np.ndarray, query: Query, top: int, min_separation: int) -> list[dict]:
    """The ``top`` largest contacts i < j between residues (special and strand tokens left out), leaving out pairs
    of one element closer than ``min_separation``."""
    i, j = np.triu_indices(len(contacts), 1)
    e, r = query.element, query.residue
    keep = (e[i] >= 0) & (e[j] >= 0) & ((e[i] != e[j]) | (np.abs(r[i] - r[j]) >= min_separation))
    i, j = i[keep], j[keep]
    order = np.argsort(-contacts[i, j], kind="stable")[:top]
    names = query.element_names
    return [{"i": int(i[k]) + 1, "j": int(j[k]) + 1, "element_i": names[e[i[k]]], "residue_i": int(r[i[k]]),
             "token_i": query.labels[i[k]], "element_j": names[e[j[k]]], "residue_j": int(r[j[k]]),
             "token_j": query.labels[j[k]], "inter_element": bool(e[i[k]] != e[j[k]]),
             "value": float(contacts[i[k], j[k]])} for k in order]


def _write(output, tsv, png, force, contacts, query: Query, scorer, options, record, model_spec) -> dict:
    from glmkit.io.contacts import write_contacts
    from glmkit.io.tsv import write_tsv

    if not np.isfinite(contacts).all():   # a model that gives NaN logits gives no map: refused, never published
        raise GlmkitError(f"{output}: the model gave NaN or infinite logits, so the contact map has no values; its "
                          f"weights or --precision cannot represent them")
    rows = top_contacts(contacts, query, options.top, options.min_separation)
    with atomic_outputs([output, tsv, png], force) as (tmp_map, tmp_tsv, tmp_png):
        write_contacts(tmp_map, contacts, query, {**asdict(options), "model": model_spec, "kind": scorer.kind},
                       [record])
        with open(tmp_tsv, "w") as fh:
            write_tsv(fh, ["i", "j", "element_i", "residue_i", "token_i", "element_j", "residue_j", "token_j",
                           "inter_element", "value"], [list(r.values()) for r in rows])
        plot_contacts(contacts, query, tmp_png, f"categorical Jacobian, {scorer.kind} {Path(scorer.name).name}")
    return {"positions": len(contacts), "top_value": rows[0]["value"] if rows else float("nan"),
            "top_inter": bool(rows and rows[0]["inter_element"])}


def _short(name: str, most: int = 24) -> str:
    """Element names in titles: assembly contig names run to 40 characters and more."""
    return name if len(name) <= most else name[:12] + "..." + name[-(most - 15):]


def plot_contacts(contacts: np.ndarray, query: Query, png: str, title: str) -> None:
    """The map with element boundaries marked; beside it, the block between the first two elements (or, with
    more, the map with every element's own block blanked): the inter-element contacts on their own scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    e = query.element
    bounds = [k for k in range(1, len(e)) if e[k] != e[k - 1] and e[k] >= 0]
    n_elements = len(query.element_names)
    fig, axes = plt.subplots(1, 2 if n_elements > 1 else 1, figsize=(12 if n_elements > 1 else 6, 5.5),
                             squeeze=False)
    vmax = np.percentile(contacts, 99.5) if contacts.size else 1
    ax = axes[0, 0]
    ax.imshow(contacts, cmap="Blues", vmin=0, vmax=vmax)
    for b in bounds:
        ax.axhline(b - 0.5, color="red", lw=0.6)
        ax.axvline(b - 0.5, color="red", lw=0.6)
    ax.set(title=title.replace(", ", "\n", 1), xlabel="position", ylabel="position")
    if n_elements > 1:
        ax = axes[0, 1]
        if n_elements == 2:
            a, b = np.flatnonzero(e == 0), np.flatnonzero(e == 1)
            block = contacts[np.ix_(a, b)]
            ax.imshow(block, cmap="Blues", vmin=0, vmax=np.percentile(block, 99.5) if block.size else 1,
                      aspect="auto")
            first, second = (_short(name) for name in query.element_names[:2])
            ax.set(title=f"inter-element block\n{first} x {second}", xlabel=f"{second} residue",
                   ylabel=f"{first} residue")
        else:
            inter = np.where((e[:, None] != e[None, :]) & (e[:, None] >= 0) & (e[None, :] >= 0), contacts, 0)
            ax.imshow(inter, cmap="Blues", vmin=0, vmax=np.percentile(inter, 99.5))
            ax.set(title="between elements only", xlabel="position", ylabel="position")
    fig.tight_layout()
    fig.savefig(png, dpi=100, format="png")
    plt.close(fig)
