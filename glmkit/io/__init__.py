"""All file formats live here: FASTA, GFF3, TSV and the Zarr stores.

Commands never open a file format themselves; they call these readers and
writers, so every format is parsed, validated and written in one place.
"""
