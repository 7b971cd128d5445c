"""gLM2 data: element stores into the token corpus store, token reads, masks and batches.

Shared by `pretrain --arch glm2` and `contextualize` on gLM2 models. The data
path is the gLM's (glmkit/data/stream.py): chunks are the items of a PackedStream,
packed into rows of the context, shuffled by windows, shared out by rank, the
split drawn by contig (glmkit/data/split.py). Memory is bounded by a
batch of contigs while building and by a window and a small read cache while
training, whatever the corpus size.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from glmkit.data.stream import ChunkCache
from glmkit.errors import GlmkitError
from glmkit.data.split import contig_keys
from glmkit.io.elements import CDS, ElementStore
from glmkit.io.store import store_record
from glmkit.io.token_corpus import TOKEN_CHUNK, VOCAB_SIZE, TokenCorpusStore, TokenCorpusWriter
from glmkit.io.token_corpus import SCHEMA as SCHEMA  # the schema of the store these build (the family's hook)
from glmkit.log import plural, progress
from glmkit.models.glm2.tokens import (AMINO_ACIDS, CLS, LEGACY, MASK, NUCLEOTIDES, PUBLISHED, Tokenisation,
                                      element_tokens, tokenisation_of)

log = logging.getLogger("glmkit")
AA_IDS = np.zeros(VOCAB_SIZE, dtype=bool)
AA_IDS[AMINO_ACIDS] = True
NT_IDS = np.zeros(VOCAB_SIZE, dtype=bool)
NT_IDS[NUCLEOTIDES] = True
MODALITIES = {"aa": AA_IDS, "nt": NT_IDS}


# -- building the token corpus ------------------------------------------------------------------------------------

def token_corpus_parameters(element_paths: Sequence[str], context: int, tokenisation: Tokenisation) -> dict:
    """What a token corpus is built from: its element stores' checksums, the context and the tokenisation (left out
    for LEGACY's, so that stores and checkpoints from before the record keep their parameters)."""
    found = {"elements": [store_record(p)["sha256"] for p in element_paths], "context": context}
    return found if tokenisation == LEGACY else {**found, "tokens": tokenisation.record()}


def corpus_tokenisation(parameters: dict, where) -> Tokenisation:
    """The tokenisation a token corpus store was built with (its parameters' record)."""
    return tokenisation_of(parameters.get("tokens"), where)


def chunk_contig(elements: list[np.ndarray], context: int, cls: bool = False):
    """One contig's elements (each its strand token then residues) cut into chunks of at most ``context`` tokens.

    Returns (chunks: list of token arrays, pieces: per element a list of (chunk, offset of its first residue in
    the chunk, residues)). Whole elements fill a chunk (after its `<cls>`, with ``cls``) until the next would not
    fit; an element longer than a chunk can hold is cut into pieces, each a chunk of its own that starts (`<cls>`,)
    its strand token: the ids the published tokenizer gives the text of each piece as an element of its own.
    """
    opening = np.array([CLS] if cls else [], np.int64)
    chunks: list[np.ndarray] = []
    pieces: list[list[tuple[int, int, int]]] = []
    current: list[np.ndarray] = [opening]
    used = len(opening)

    def close():
        nonlocal current, used
        if used > len(opening):
            chunks.append(np.concatenate(current))
        current, used = [opening], len(opening)

    for tokens in elements:
        n = len(tokens)
        if len(opening) + n > context:  # too long for any chunk: its own chunks, piece by piece
            close()
            room = context - len(opening) - 1
            mine = []
            for s in range(0, n - 1, room):
                body = tokens[1 + s:1 + s + room]
                mine.append((len(chunks), len(opening) + 1, len(body)))
                chunks.append(np.concatenate([opening, tokens[:1], body]))
            pieces.append(mine)
            continue
        if used + n > context:
            close()
        pieces.append([(len(chunks), used + 1, n - 1)])  # the chunk it will close into
        current.append(tokens)
        used += n
    close()
    return chunks, pieces


def build_token_corpus(element_paths: Sequence[str], out: Path, context: int,
                       tokenisation: Tokenisation = PUBLISHED) -> TokenCorpusStore:
    """The token corpus store of ``element_paths`` at ``out`` (the caller publishes it). One pass, batch by
    batch of contigs."""
    if context < 2 + tokenisation.cls:
        raise GlmkitError(f"--context {context}: a chunk needs room for {'<cls>, ' if tokenisation.cls else ''}a "
                          f"strand token and a residue")
    parameters = token_corpus_parameters(element_paths, context, tokenisation)
    writer = TokenCorpusWriter(out, parameters, [store_record(p) for p in element_paths])
    cut = 0
    for path in element_paths:
        store = ElementStore(path)
        with progress(total=store.n_contigs, desc=f"tokens {Path(path).name}", unit="contigs") as bar:
            for batch in store.batches():
                cut += _add_batch(writer, batch, context, tokenisation)
                bar.update(batch.n_contigs)
    if not writer.n_chunks:
        raise GlmkitError(f"no elements to tokenise in {', '.join(map(str, element_paths))}")
    writer.close({"contigs": writer.n_contigs, "chunks": writer.n_chunks, "tokens": writer.n_tokens,
                  "elements": writer.n_elements, "elements_cut": cut})
    log.info(f"tokens: {plural(writer.n_tokens, 'token')} in {plural(writer.n_chunks, 'chunk')} of at most {context} "
             f"from {plural(writer.n_contigs, 'contig')}"
             + (f"; {plural(cut, 'element')} longer than a chunk cut into pieces" if cut else ""))
    return TokenCorpusStore(out)


def _add_batch(writer: TokenCorpusWriter, batch, context: int, tokenisation: Tokenisation) -> int:
    e, offsets = batch.elements, batch.offsets
    is_cds = e["type"] == CDS
    all_tokens, counts, chunk_counts, chunk_lengths, chunk_contigs = [], [], [], [], []
    piece_counts, piece_starts, piece_lengths = [], [], []
    base, cut = 0, 0  # tokens of the batch so far
    for c in range(batch.n_contigs):
        rows = range(int(offsets[c]), int(offsets[c + 1]))
        elements = [element_tokens(e["aa"][i] if is_cds[i] else e["nt"][i], int(e["strand"][i]), bool(is_cds[i]),
                                   tokenisation) for i in rows]
        chunks, pieces = chunk_contig(elements, context, tokenisation.cls)
        starts = base + np.cumsum([0] + [len(t) for t in chunks[:-1]]) if chunks else []
        for mine in pieces:
            piece_counts.append(len(mine))
            cut += len(mine) > 1
            for chunk, offset, length in mine:
                piece_starts.append(int(starts[chunk]) + offset)
                piece_lengths.append(length)
        tokens = np.concatenate(chunks) if chunks else np.zeros(0, np.int64)
        counts.append(np.bincount(tokens, minlength=VOCAB_SIZE))
        all_tokens.append(tokens)
        chunk_counts.append(len(chunks))
        chunk_lengths.extend(len(t) for t in chunks)
        chunk_contigs.extend([c] * len(chunks))
        base += len(tokens)
    writer.add(batch.contigs["name"], contig_keys(batch.contigs["source"]), np.array(counts), chunk_counts,
               chunk_lengths, chunk_contigs, np.concatenate(all_tokens).astype(np.uint8), e["id"], e["type"],
               np.repeat(np.arange(batch.n_contigs), batch.counts), piece_counts, piece_starts, piece_lengths)
    return cut


def training_token_counts(corpus: TokenCorpusStore, split) -> np.ndarray:
    """Occurrences of each token in the training split's contigs (the unigram baseline), a block of contigs at a
    time."""
    keys, counts = corpus.array("contigs/key"), corpus.array("contigs/token_counts")
    total = np.zeros(VOCAB_SIZE, np.int64)
    for start in range(0, corpus.n_contigs, 1 << 16):
        train = ~split.validation(keys[start:start + (1 << 16)])
        total += counts[start:start + (1 << 16)][train].sum(0)
    return total


# -- reading ------------------------------------------------------------------------------------------------------

class TokenReader:
    """Tokens of chunks, through a cache of whole chunks of the tokens array (ChunkCache): a window's chunks are
    consecutive in the store, so reading its rows costs one pass, whatever order they are taken in."""

    def __init__(self, corpus: TokenCorpusStore, cache_chunks: int = 16, chunk: int | None = None):
        array = corpus.array("tokens")
        chunk = chunk or array.chunks[0] or TOKEN_CHUNK
        self._rows = ChunkCache(lambda k: (array[k * chunk:(k + 1) * chunk],), chunk, cache_chunks)

    def tokens(self, start: int, length: int) -> np.ndarray:
        return self._rows.rows(start, length)[0]


def pack_batch(reader: TokenReader, starts: np.ndarray, lengths: np.ndarray, rows: list[list[int]],
               capacity: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of packed chunks -> tokens (B, capacity) int64 (padding <pad>), segments (B, capacity) (0: padding,
    else the chunk's number in its row). ``rows`` index ``starts``/``lengths``."""
    from glmkit.models.glm2.tokens import PAD

    tokens = np.full((len(rows), capacity), PAD, np.int64)
    segments = np.zeros((len(rows), capacity), np.int64)
    for b, row in enumerate(rows):
        pos = 0
        for seg, i in enumerate(row, 1):
            n = int(lengths[i])
            tokens[b, pos:pos + n] = reader.tokens(int(starts[i]), n)
            segments[b, pos:pos + n] = seg
            pos += n
    return tokens, segments


def mask_tokens(tokens: np.ndarray, rng: np.random.Generator, fraction: float, corrupt: bool = True):
    """Masked-token corruption of one row: each residue token (amino acid or nucleotide, not `<cls>`, strand,
    `<unk>` or padding) chosen with probability ``fraction``; of those 80 % become `<mask>`, 10 % a random residue
    of the same modality, 10 % stay (``corrupt=False``: all become `<mask>`). Returns (inputs, chosen)."""
    scores, kinds, draw = rng.random(tokens.shape), rng.random(tokens.shape), rng.random(tokens.shape)
    residue = AA_IDS[tokens] | NT_IDS[tokens]
    chosen = residue & (scores < fraction)
    inputs = tokens.copy()
    if not corrupt:
        inputs[chosen] = MASK
        return inputs, chosen
    inputs[chosen & (kinds < 0.8)] = MASK
    swap = chosen & (kinds >= 0.8) & (kinds < 0.9)
    is_aa = AA_IDS[tokens]
    # a random residue of its own modality: the 20 common amino acids (L..C), or one of a/t/c/g
    common = AMINO_ACIDS[:20]
    inputs[swap & is_aa] = common[(draw[swap & is_aa] * len(common)).astype(np.int64)]
    inputs[swap & ~is_aa] = NUCLEOTIDES[(draw[swap & ~is_aa] * len(NUCLEOTIDES)).astype(np.int64)]
    return inputs, chosen


def unigram_log_probs(counts: np.ndarray) -> np.ndarray:
    """log p(token | its modality) from token counts (add-one smoothing within each modality); 0 elsewhere."""
    out = np.zeros(VOCAB_SIZE, np.float64)
    for ids in MODALITIES.values():
        c = counts[ids].astype(np.float64) + 1.0
        out[ids] = np.log(c / c.sum())
    return out


# -- the family's corpus hooks (glmkit/models/spec.py) ------------------------------------------------------------

STORE = TokenCorpusStore   # the store these build and read (SCHEMA: its schema)


def training_tokenisation(meta: dict | None) -> Tokenisation:
    """How a training tokenises: as the checkpoint it continues was trained (``meta``, its config.json), a new one as
    the published tokenizer does (docs/commands/pretrain.md)."""
    return PUBLISHED if meta is None else tokenisation_of(meta.get("tokens"), "the checkpoint")


def parameters(element_paths, embedding_path, options, meta=None) -> dict:
    return token_corpus_parameters(element_paths, options.context, training_tokenisation(meta))


def build(element_paths, embedding_path, out: Path, options, meta=None) -> None:
    build_token_corpus(element_paths, out, options.context, training_tokenisation(meta))


def check_resume_inputs(meta: dict, element_paths, embedding_path, options, where: Path) -> None:
    """Before anything is built: a resumed run must read the very corpus its checkpoint was trained on."""
    if meta.get("corpus") != parameters(element_paths, embedding_path, options, meta):
        raise GlmkitError(f"{where}: the element stores differ from those this checkpoint was trained on; "
                          f"resume with the same inputs")
