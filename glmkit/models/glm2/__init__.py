"""gLM2 (Cornman et al. 2024, OMG): architecture, weights, tokens, corpus, training task, context job."""
