"""Chains of commands: the demo's stages and the learning evaluation on the synthetic corpus. The one layer
above the commands (commands never import commands; these run them in order)."""
