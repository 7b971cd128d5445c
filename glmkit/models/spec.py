"""What a model family is to the rest of glmkit (torchtitan's ModelSpec, in small): its names, presets and
training recipe as data, and its pieces as modules of its folder, imported only when a command needs them.

A family's folder (glmkit/models/<family>/) holds, by these names:

    model.py     the architecture only, shapes in comments
    weights.py   load(path) -> a loaded model: glmkit checkpoints (and the family's published layouts)
    corpus.py    SCHEMA, STORE, parameters(elements, embeddings, options, meta), build(elements, embeddings,
                 out, options, meta), check_resume_inputs(meta, elements, embeddings, options, where)
                 (meta: the checkpoint a resumed training continues, or the model a new one starts from, else
                 None: gLM2 tokenises as that model was trained)
    task.py      check_options(options), model_config(options, **shapes), make_task(corpus, split, options,
                 meta, extras, checkpoint, embeddings, rank, world, init) -> (task for glmkit.train, description)
                 (init: the loaded model a new run starts from, `pretrain --init`, else None)
    context.py   Job: what `contextualize` computes with it

and its __init__.py defines SPEC, listed once in glmkit/models/registry.py.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ModelSpec:
    key: str                        # --arch
    architecture: str               # a checkpoint's "architecture"
    package: str                    # where its pieces live
    presets: tuple[str, ...]        # --preset choices
    recipe: dict                    # training defaults: mask_fraction, lr, weight_decay, betas, schedule
    reads_embeddings: bool          # the gLM reads ESM2 embeddings; gLM2 reads the sequences
    items: str                      # the corpus table of its training items ("subcontigs", "chunks") ...
    item_name: str                  # ... and what messages call them
    checkpoint_extras: tuple[str, ...] = ()        # tensor files a checkpoint carries beside the weights
    published_keys: frozenset = field(default_factory=frozenset)   # config.json keys of a published folder

    def part(self, name: str):
        """The family's module ``name`` (model, weights, corpus, task, context)."""
        return importlib.import_module(f"{self.package}.{name}")
