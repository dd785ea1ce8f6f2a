"""``python -m hierqdrant`` — the same as the ``hierqdrant`` command."""

from .cli import main

main()
