"""One module per command: parse what the CLI hands over, validate it, call the mechanisms."""
