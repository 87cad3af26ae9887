"""``python -m eecompile``: the command line."""

from eecompile.cli import entry

entry()
