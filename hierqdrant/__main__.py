"""``python -m hierqdrant`` — the same as the ``hierqdrant`` command."""

from hierqdrant_cli import main

main()
