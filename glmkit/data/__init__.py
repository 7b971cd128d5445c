"""Data paths shared by every model: the packed stream, the split, planning, the synthetic corpus."""
