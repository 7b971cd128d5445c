"""Write tiny random-weight ESM2 folders with transformers 4.x's own save_pretrained, and their outputs.

    python -m venv /tmp/tf4 && /tmp/tf4/bin/pip install torch==2.13.0 'transformers>=4.40,<5'
    /tmp/tf4/bin/python test_data/make_hf_esm_v4.py

The installed transformers (5.x) writes another layout (LayerNorm as gamma/beta);
tests/test_esm2.py makes those folders itself. Transformers 4 cannot be
installed beside 5, so its folders are made once here and committed:

    hf_esm_v4/masked_lm/     EsmForMaskedLM, model.safetensors (the layout of facebook/esm2_* on the Hub)
    hf_esm_v4/model_bin/     EsmModel without pooler, pytorch_model.bin (safe_serialization=False)
    hf_esm_v4/expected.npz   tokens (B, T) and transformers 4's last_hidden_state for them (B, T, D)

Deterministic for a given torch and transformers.
"""

from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import EsmConfig, EsmForMaskedLM, EsmModel

assert transformers.__version__.startswith("4."), f"needs transformers 4.x, found {transformers.__version__}"
OUT = Path(__file__).parent / "hf_esm_v4"


def main() -> None:
    torch.manual_seed(4)
    cfg = EsmConfig(vocab_size=33, hidden_size=16, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                    position_embedding_type="rotary", token_dropout=True, pad_token_id=1, mask_token_id=32,
                    emb_layer_norm_before=False, layer_norm_eps=1e-5, max_position_embeddings=1026)
    mlm = EsmForMaskedLM(cfg).eval()
    with torch.no_grad():  # LayerNorms away from 1/0 so that a swapped weight and bias would show
        for name, p in mlm.named_parameters():
            p.add_(torch.randn_like(p) * (0.3 if "LayerNorm" in name or "layer_norm" in name else 0.05))
    mlm.save_pretrained(OUT / "masked_lm")
    bare = EsmModel(cfg, add_pooling_layer=False).eval()
    bare.load_state_dict(mlm.esm.state_dict(), strict=False)
    bare.save_pretrained(OUT / "model_bin", safe_serialization=False)

    rng = np.random.default_rng(4)
    lengths = [12, 7, 20]
    tokens = np.ones((len(lengths), max(lengths) + 2), dtype=np.int64)  # <pad> = 1
    for i, n in enumerate(lengths):
        tokens[i, 0], tokens[i, n + 1] = 0, 2                                # <cls>, <eos>
        tokens[i, 1:n + 1] = rng.integers(4, 24, n)                          # the 20 standard amino acids
    t = torch.from_numpy(tokens)
    with torch.no_grad():
        hidden = bare(input_ids=t, attention_mask=t.ne(1)).last_hidden_state.numpy()
    np.savez(OUT / "expected.npz", tokens=tokens, hidden=hidden)


if __name__ == "__main__":
    main()
