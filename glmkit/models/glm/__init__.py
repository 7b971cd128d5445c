"""The gLM (Hwang et al. 2024): architecture, weights, normalisation, corpus, training task, context job."""
