"""``python -m quantorch``: the command line (what ``paper start --detach`` launches)."""

from quantorch.cli.main import run

run()
