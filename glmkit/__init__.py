"""glmkit: from assemblies to genomic language models.

Importing the package is cheap on purpose (no numpy, no torch): `glmkit
--version` and `--help` must answer instantly.
"""

__version__ = "0.1.0"
