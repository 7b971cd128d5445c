"""gLM2 as a task of the training loop (glmkit/train.py): its data, masking, loss and metrics.

Masked-token modelling over packed chunks of contig tokens (glmkit/models/glm2/corpus.py):
30 % of residue tokens (amino acids and nucleotides; never `<cls>`, strand
tokens, `<unk>` or padding) are chosen per step, each independently; of those
80 % become `<mask>`, 10 % a random residue of the same modality, 10 % stay
(BERT's rule: the gLM2 authors published no training code, and the OMG paper
states the 30 % rate only). The loss is the cross-entropy of the chosen
tokens, summed over every process and micro-step and divided by their number.

Validation masks the same share of the held-out contigs' residue tokens, all
as `<mask>` (a clean measure), fixed for the whole run, and reports per
modality (amino acids, nucleotides): accuracy of the most likely token,
perplexity, and the perplexity of the unigram baseline — each token's
frequency among the training split's tokens of its modality — on the very
same tokens.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from glmkit.data.stream import PackedTask
from glmkit.models.glm2.corpus import MODALITIES, TokenReader, mask_tokens, pack_batch, unigram_log_probs
from glmkit.data.split import Split
from glmkit.io.token_corpus import TokenCorpusStore
from glmkit.models.glm2.model import GLM2, GLM2Config


IGNORED = -100  # cross_entropy's ignore_index: a position whose token is not chosen


class GLM2Task(PackedTask):
    architecture, unit = "gLM2", "tokens"
    metrics = (*(f"val_{m}_{k}" for k in ("accuracy", "perplexity", "unigram_perplexity") for m in MODALITIES),
               "val_unigram_loss")
    validation_sums = ("count", "loss_sum", *(f"{m}_{k}" for m in MODALITIES
                                                for k in ("n", "correct", "nll", "unigram_nll")))
    # the training curves (train.plot_training_curves): loss and each modality's perplexity beside the unigram's
    curves = {"loss": ("train_loss", "val_loss", "val_unigram_loss"),
              **{f"{name} perplexity": (f"val_{m}_perplexity", f"val_{m}_unigram_perplexity")
                 for m, name in (("aa", "amino-acid"), ("nt", "nucleotide"))}}

    def __init__(self, corpus: TokenCorpusStore, split: Split, cfg: GLM2Config, mask_fraction: float, seed: int,
                 capacity: int, info: dict, train_token_counts: np.ndarray, static_shapes: bool = False):
        self.corpus, self.split, self.cfg, self.mask_fraction = corpus, split, cfg, mask_fraction
        self.static_shapes = static_shapes
        self.seed, self.capacity, self.info = seed, capacity, info
        self.name, self.n_items = corpus.path, corpus.n_chunks
        self._keys = corpus.array("contigs/key")
        self._starts, self._lengths = corpus.array("chunks/start"), corpus.array("chunks/length")
        self._item_contig = corpus.array("chunks/contig")
        self.unigram = torch.from_numpy(unigram_log_probs(train_token_counts))

    # -- model and checkpoint -------------------------------------------------------------------------------

    def build_model(self) -> GLM2:
        return GLM2(self.cfg)

    def checkpoint(self):
        return self.cfg.to_dict(), {}, self.info

    # -- data (the rest of the data path is PackedTask's) ----------------------------------------------------

    def reader(self) -> TokenReader:
        return TokenReader(self.corpus)

    def _batch(self, rows: list[np.ndarray], global_rows: np.ndarray, step: int, reader: TokenReader) -> dict:
        starts, lengths, local = self._item_table(rows)
        targets, segments = pack_batch(reader, starts, lengths, local, self.capacity)
        inputs, chosen = np.empty_like(targets), np.zeros(targets.shape, dtype=bool)
        for b, row in enumerate(np.asarray(global_rows).tolist()):  # a function of (seed, step, global row)
            rng = np.random.default_rng([self.seed, step + 1, row])
            inputs[b], chosen[b] = mask_tokens(targets[b], rng, self.mask_fraction,
                                               corrupt=step != self.VALIDATION_STREAM)
        # the chosen tokens' flat positions, found here on the host: on a GPU, boolean indexing by the mask would make
        # the host wait for the device inside the step (tests/test_train.py counts such waits)
        batch = {"tokens": inputs, "segments": segments, "targets": targets, "masked": chosen,
                 "count": int(chosen.sum()), "units": int((segments > 0).sum()),
                 "masked_at": np.flatnonzero(chosen.ravel())}
        if self.static_shapes:  # the training loss over every position, the unchosen ones ignored by cross_entropy
            batch["loss_targets"] = np.where(chosen, targets, IGNORED).ravel()
        return batch

    # -- loss and metrics --------------------------------------------------------------------------------------

    def _logits(self, model, batch):
        at = batch["masked_at"] if "masked_at" in batch else batch["masked"].flatten().nonzero().squeeze(1)
        logits, _ = model(batch["tokens"], batch["segments"], only=at)        # (N, vocab): the chosen tokens only
        return logits.float(), batch["targets"].flatten().index_select(0, at)  # (N, vocab), (N,)

    def loss(self, model, batch):
        if "loss_targets" in batch:  # --static-shapes: every tensor of the step shaped by (B, L) alone
            logits, _ = model(batch["tokens"], batch["segments"])                     # (B, L, vocab)
            return F.cross_entropy(logits.flatten(0, 1).float(), batch["loss_targets"], reduction="sum",
                                   ignore_index=IGNORED), batch["count"]
        logits, targets = self._logits(model, batch)
        return F.cross_entropy(logits, targets, reduction="sum"), batch["count"]

    def evaluate(self, model, batch) -> dict:
        logits, targets = self._logits(model, batch)
        nll = F.cross_entropy(logits, targets, reduction="none").double()
        correct = logits.argmax(-1) == targets
        unigram = -self.unigram.to(targets.device)[targets]
        sums = {"count": batch["count"], "loss_sum": float(nll.sum())}
        for name, ids in MODALITIES.items():
            mine = torch.from_numpy(ids).to(targets.device)[targets]
            sums.update({f"{name}_n": int(mine.sum()), f"{name}_correct": int((correct & mine).sum()),
                         f"{name}_nll": float(nll[mine].sum()), f"{name}_unigram_nll": float(unigram[mine].sum())})
        return sums

    def summarize(self, sums: dict) -> dict:
        if not sums.get("count"):
            return {}
        found = {"val_loss": sums["loss_sum"] / sums["count"],   # and the unigram's cross-entropy on the same tokens
                 "val_unigram_loss": sum(sums[f"{m}_unigram_nll"] for m in MODALITIES) / sums["count"]}
        for name in MODALITIES:
            n = sums[f"{name}_n"]
            found[f"val_{name}_accuracy"] = sums[f"{name}_correct"] / n if n else math.nan
            found[f"val_{name}_perplexity"] = math.exp(sums[f"{name}_nll"] / n) if n else math.nan
            found[f"val_{name}_unigram_perplexity"] = math.exp(sums[f"{name}_unigram_nll"] / n) if n else math.nan
        return found


# -- the family's training hooks (glmkit/models/spec.py) ----------------------------------------------------------

def check_options(options) -> None:
    from glmkit.errors import GlmkitUsageError

    if options.dropout is not None or options.recipe != "glmkit":
        raise GlmkitUsageError("--dropout and --recipe are options of the gLM (--arch glm); gLM2 has neither")


def model_config(options, **shapes) -> GLM2Config:
    from glmkit.errors import GlmkitUsageError
    from glmkit.models.glm2.model import glm2_preset

    cfg = glm2_preset(options.preset, depth=options.num_layers, dim=options.hidden_size, heads=options.num_heads)
    if cfg.dim % cfg.heads or (cfg.dim // cfg.heads) % 2:
        raise GlmkitUsageError(f"--hidden-size {cfg.dim} must be a multiple of --num-heads {cfg.heads} with an "
                               f"even quotient (rotary positions rotate pairs of dimensions)")
    return cfg


def make_task(corpus, split, options, meta, extras, checkpoint, embedding_path, rank, world, init=None):
    """The gLM2 task, with the training split's token frequencies for the unigram baseline; its shape the
    checkpoint's it resumes, or the model's it starts from (``init``, a LoadedGLM2: pretrain --init)."""
    from dataclasses import asdict

    from glmkit.models.glm2.corpus import corpus_tokenisation, training_token_counts

    cfg = GLM2Config.from_dict(meta.get("config"), checkpoint / "config.json") if meta is not None \
        else init.cfg if init is not None else model_config(options)
    # how its chunks were tokenised, so that every later command runs the model the same way
    tokens = corpus_tokenisation(corpus.attrs["parameters"], corpus.path)
    info = {"options": asdict(options), "corpus": corpus.attrs["parameters"], "tokens": tokens.record()}
    task = GLM2Task(corpus, split, cfg, options.mask_fraction, options.seed, options.context, info,
                    training_token_counts(corpus, split), options.static_shapes)
    return task, f"gLM2 {cfg.depth} layers, dim {cfg.dim}, {cfg.heads} heads, context {options.context}"
