#!/usr/bin/env python3
"""The gLM as its reference code builds it: transformers 4.x RobertaModel with relative_key_query.

Runs in a separate environment with transformers < 5 (today's transformers
dropped relative_key_query). Input projection 1281 -> hidden, RobertaModel fed
inputs_embeds with an attention mask (padding), heads for 4 x label_dim
predictions and 4 likelihoods, loss = MSE(closest) + 1e-4 CE, AdamW, gradient
clipping: the same arithmetic as glmkit's gLM. Writes its initial weights under
glm.bin's key names, one forward pass for the equality check, and genes/s.

    python roberta_reference.py spec.json out.pt
"""

import json
import sys
import time

import torch
import torch.nn.functional as F
from transformers import RobertaConfig, RobertaModel


class ReferenceGLM(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        config = RobertaConfig(hidden_size=c["hidden_size"], num_hidden_layers=c["num_layers"],
                               num_attention_heads=c["num_heads"], intermediate_size=c["intermediate_size"],
                               position_embedding_type="relative_key_query", max_position_embeddings=512,
                               type_vocab_size=1, vocab_size=4, hidden_dropout_prob=c["dropout"],
                               attention_probs_dropout_prob=c["dropout"], layer_norm_eps=1e-12)
        self.dense = torch.nn.Linear(c["input_dim"], c["hidden_size"])
        self.roberta = RobertaModel(config, add_pooling_layer=False)
        self.lm_dense = torch.nn.Linear(c["hidden_size"], c["num_predictions"] * c["label_dim"])
        self.lm_prob = torch.nn.Linear(c["hidden_size"], c["num_predictions"])
        self.c = c

    def forward(self, features, attention_mask):
        h = self.roberta(inputs_embeds=self.dense(features), attention_mask=attention_mask).last_hidden_state
        B, L, _ = h.shape
        return h, self.lm_dense(h).view(B, L, self.c["num_predictions"], self.c["label_dim"]), self.lm_prob(h)

    def glm_bin_state(self):
        sd = {f"dense.{k}": v for k, v in self.dense.state_dict().items()}
        sd.update({f"roberta.roberta.{k}": v for k, v in self.roberta.state_dict().items()})
        sd.update({f"roberta.lm_head.dense.{k}": v for k, v in self.lm_dense.state_dict().items()})
        sd.update({f"roberta.lm_head.dense_prob.{k}": v for k, v in self.lm_prob.state_dict().items()})
        return {k: v.clone() for k, v in sd.items()}


def batch(spec, lengths, step):
    """Padded batch: one sub-contig per row (as the reference code does), of the given lengths."""
    g = torch.Generator().manual_seed(spec["seed"] * 1000003 + step)
    L = max(lengths)
    features = torch.randn(len(lengths), L, spec["config"]["input_dim"], generator=g)
    labels = torch.randn(len(lengths), L, spec["config"]["label_dim"], generator=g)
    mask = torch.zeros(len(lengths), L, dtype=torch.long)
    masked = torch.zeros(len(lengths), L, dtype=torch.bool)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
        masked[b, torch.randperm(n, generator=g)[:max(1, round(0.15 * n))]] = True
    features[masked] = -1.0
    return features, labels, mask, masked


def loss_fn(preds, logits, labels, masked):
    p, lg, y = preds[masked], logits[masked], labels[masked]
    mse = ((p - y[:, None]) ** 2).mean(-1)
    best = mse.argmin(-1)
    return mse.gather(1, best[:, None]).mean() + 1e-4 * F.cross_entropy(lg, best)


def main():
    spec = json.load(open(sys.argv[1]))
    torch.manual_seed(spec["seed"])
    torch.set_num_threads(spec["threads"])
    model = ReferenceGLM(spec["config"])
    state = model.glm_bin_state()
    model.eval()
    f, _, m, _ = batch(spec, spec["check_lengths"], -1)
    with torch.no_grad():
        hidden, preds, logits = model(f, m)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    genes, elapsed = 0, 0.0
    for step, lengths in enumerate(spec["steps_lengths"]):
        features, labels, mask, masked = batch(spec, lengths, step)
        t = time.perf_counter()
        _, p, lg = model(features, mask)
        loss = loss_fn(p, lg, labels, masked)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step >= spec["warmup"]:
            elapsed += time.perf_counter() - t
            genes += int(mask.sum())
    torch.save({"state": state, "features": f, "mask": m, "hidden": hidden, "preds": preds, "logits": logits,
                "genes_per_s": genes / elapsed, "transformers": __import__("transformers").__version__}, sys.argv[2])


if __name__ == "__main__":
    main()
