"""``python -m lagscaler`` runs the command line."""

from lagscaler.cli import run

run()
