"""`glmkit contextualize` on gLM2 models: per-element and per-contig embeddings.

Each contig's tokens are cut into chunks as training cuts them (the token
corpus store, glmkit/models/glm2/corpus.py, built in the work folder) and with
the model's own tokenisation (a published folder's: the published
tokenizer's ids, no `<cls>`); chunks are packed into rows of `--context`
tokens, each attending within itself, and run through the model without
masking. Per element: the mean hidden state (of `--layer`, default the last
block's output, the published model's `last_hidden_state`) over its residue
tokens, the strand token excluded; an element cut into pieces averages over
all of them.
Per contig: the mean of its elements' embeddings. CDS go to genes/ (the same
meaning as the gLM's gene embeddings, so later commands read them alike),
intergenic regions to intergenic/; contigs/ holds every contig with elements.

The driver (work folder, groups saved as they finish, resume, publish) is
glmkit/commands/contextualize.py's; this module is what differs: the corpus, the
groups, one group's computation and the output's columns.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

from glmkit.errors import GlmkitError, GlmkitUsageError
from glmkit.io.elements import CDS
from glmkit.io.context import ContextStoreWriter
from glmkit.io.files import atomic_outputs

GROUP_CHUNKS = 256  # chunks per saved group of contigs (the unit of resume)


class Job:
    """What contextualize does for gLM2 models: per-element and per-contig embeddings."""
    unit = "tokens"
    group_size = GROUP_CHUNKS

    def __init__(self, loaded, options, device, amp):
        self.model, self.cfg, self.meta = loaded.model.to(device), loaded.cfg, loaded.meta
        self.tokens = loaded.tokens   # chunks tokenised as the model was trained (a published folder: as published)
        self.o, self.device, self.amp = options, device, amp
        self.layer = self.cfg.depth if options.layer is None else options.layer
        if not 0 <= self.layer <= self.cfg.depth:
            raise GlmkitError(f"--layer {self.layer}: the model has layers 0 to {self.cfg.depth}")

    @classmethod
    def load(cls, model_path, embedding_path, options, device, amp) -> "Job":
        from glmkit.models.glm2.weights import load_glm2

        return cls(load_glm2(model_path), options, device, amp)

    @staticmethod
    def check(options, embedding_path) -> None:
        """Options that mean nothing for gLM2: usage errors naming them."""
        if embedding_path:
            raise GlmkitUsageError("--embeddings is for gLM models: gLM2 reads the element stores' sequences")
        for flag, value, default in (("--attention", options.attention, False),
                                     ("--attention-queries", options.attention_queries, "plain"),
                                     ("--predictions", options.predictions, False),
                                     ("--inputs", options.inputs, False),
                                     ("--windows", options.windows, "centred"),
                                     ("--window-genes", options.window_genes, 30)):
            if value != default:
                raise GlmkitUsageError(f"{flag} is an option of gLM models, not of gLM2")

    # -- what the driver calls ----------------------------------------------------------------------------------

    def corpus(self, work: Path, element_paths):
        """The contigs' tokens in a token corpus store in the work folder, cut into chunks as training cuts them."""
        from glmkit.io.store import reuse_or_build
        from glmkit.io.token_corpus import SCHEMA, TokenCorpusStore
        from glmkit.models.glm2.corpus import build_token_corpus, token_corpus_parameters

        return reuse_or_build(work / "corpus.zarr", SCHEMA, TokenCorpusStore,
                              token_corpus_parameters(element_paths, self.o.context, self.tokens),
                              lambda temp: build_token_corpus(element_paths, temp, self.o.context, self.tokens),
                              what="gLM2 token corpus store", kind="corpus store")

    def groups(self, corpus) -> list[tuple[int, int, int, int]]:
        """Groups of whole contigs of about GROUP_CHUNKS chunks: (first contig, end contig, first token, end token)."""
        chunk_offsets = corpus.array("contigs/offsets")[:]
        starts = np.append(corpus.array("chunks/start")[:], corpus.n_tokens)
        groups, c0 = [], 0
        for c in range(corpus.n_contigs):
            if chunk_offsets[c + 1] - chunk_offsets[c0] >= GROUP_CHUNKS or c == corpus.n_contigs - 1:
                groups.append((c0, c + 1, int(starts[chunk_offsets[c0]]), int(starts[chunk_offsets[c + 1]])))
                c0 = c + 1
        return groups

    def group(self, corpus, group) -> dict:
        import torch

        from glmkit.data.stream import pack_rows
        from glmkit.models.glm2.corpus import TokenReader, pack_batch

        c0, c1, _, _ = group
        k0, k1 = (int(x) for x in corpus.array("contigs/offsets")[c0:c1 + 1][[0, -1]])
        starts, lengths = corpus.array("chunks/start")[k0:k1], corpus.array("chunks/length")[k0:k1]
        e0, e1 = (int(x) for x in corpus.array("contigs/elements")[c0:c1 + 1][[0, -1]])
        piece_offsets = corpus.array("elements/pieces")[e0:e1 + 1]
        p_start = corpus.array("pieces/start")[int(piece_offsets[0]):int(piece_offsets[-1])]
        p_length = corpus.array("pieces/length")[int(piece_offsets[0]):int(piece_offsets[-1])]
        hidden_of_chunk = {}
        reader, D = TokenReader(corpus), self.cfg.dim
        rows = pack_rows(lengths, self.o.context)
        for r in range(0, len(rows), self.o.batch_size):
            batch = rows[r:r + self.o.batch_size]
            width = max(int(lengths[row].sum()) for row in batch)   # the longest row, not --context (padding)
            tokens, segments = pack_batch(reader, starts, lengths, batch, width)
            t = lambda a: torch.from_numpy(a).to(self.device)  # noqa: E731
            with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.amp,
                                                        enabled=self.amp != torch.float32):
                hidden = self.model.encode(t(tokens), t(segments), layers=self.layer)
            hidden = hidden.float().cpu().numpy()
            for b, row in enumerate(batch):
                pos = 0
                for i in row.tolist():
                    hidden_of_chunk[i] = (hidden[b, pos:pos + int(lengths[i])])
                    pos += int(lengths[i])
        chunk_of_token = np.repeat(np.arange(k1 - k0), lengths)   # token (from the group's first) -> chunk
        token0 = int(starts[0])
        sums = np.zeros((e1 - e0, D), np.float64)
        counts = np.zeros(e1 - e0, np.int64)
        piece_element = np.repeat(np.arange(e1 - e0), np.diff(piece_offsets))
        for p, (s, n) in enumerate(zip(p_start.tolist(), p_length.tolist())):
            if n:
                k = int(chunk_of_token[s - token0])
                at = s - int(starts[k])
                sums[piece_element[p]] += hidden_of_chunk[k][at:at + n].sum(0)
                counts[piece_element[p]] += n
        element_emb = (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)
        contig = corpus.array("elements/contig")[e0:e1] - c0
        per_contig = np.bincount(contig, minlength=c1 - c0)
        contig_sum = np.zeros((c1 - c0, D), np.float64)
        np.add.at(contig_sum, contig, element_emb)
        return {"element_embedding": element_emb, "first_element": np.array(e0), "end_element": np.array(e1),
                "contig_embedding": (contig_sum / np.maximum(per_contig, 1)[:, None]).astype(np.float32),
                "contig_has_elements": per_contig > 0}

    def write(self, output, force, corpus, groups, work: Path, records, model_path: str, saved) -> dict:
        """The context store, from the saved groups in order (one group in memory at a time)."""
        o, D = self.o, self.cfg.dim
        summary = {"genes": 0, "intergenic": 0, "contigs": 0, "tokens": corpus.n_tokens}
        with atomic_outputs([output], force) as (tmp,):
            store = ContextStoreWriter(tmp, {**asdict(o), "layer": self.layer, "model": model_path}, records,
                                       {"architecture": "gLM2", "config": self.meta["config"],
                                        "step": self.meta.get("step"), "tokens": self.tokens.record()})
            for part in ("genes", "intergenic"):
                store.add(f"{part}/id", str)
                store.add(f"{part}/contig", np.int32)
                store.add(f"{part}/embedding", o.dtype, 4096, (D,))
            store.add("contigs/name", str)
            store.add("contigs/embedding", o.dtype, 4096, (D,))
            names, ids = corpus.array("contigs/name"), corpus.array("elements/id")
            types, contigs = corpus.array("elements/type"), corpus.array("elements/contig")
            for k, (c0, c1, _, _) in enumerate(groups):
                result = saved(work / f"group-{k:06d}.npz")
                if result is None:
                    raise GlmkitError(f"{work}: group {k} became unreadable; rerun the command")
                keep = result["contig_has_elements"]
                row = summary["contigs"] + np.cumsum(keep) - 1  # contigs without elements get no row
                e0, e1 = int(result["first_element"]), int(result["end_element"])
                kind, contig = types[e0:e1], row[contigs[e0:e1] - c0]
                for part, mine in (("genes", kind == CDS), ("intergenic", kind != CDS)):
                    store.extend(f"{part}/id", ids[e0:e1].astype(object)[mine])
                    store.extend(f"{part}/contig", contig[mine])
                    store.extend(f"{part}/embedding", result["element_embedding"][mine])
                    summary[part] += int(mine.sum())
                store.extend("contigs/name", names[c0:c1].astype(object)[keep])
                store.extend("contigs/embedding", result["contig_embedding"][keep])
                summary["contigs"] += int(keep.sum())
            store.close_columns()
            store.finish(summary)
        return summary

    @staticmethod
    def describe(summary: dict) -> str:
        return (f"{summary['genes']:,} genes and {summary['intergenic']:,} intergenic regions in "
                f"{summary['contigs']:,} contigs ({summary['tokens']:,} tokens)")
