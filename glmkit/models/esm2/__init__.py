"""ESM2 (Lin et al. 2023): architecture and weights (fair-esm files, Hugging Face folders)."""
