"""Torch-free genome biology: gene finding, the OMG corpus rules, windows, MMseqs2."""
