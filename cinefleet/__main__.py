"""``python -m cinefleet``: the same as the ``cinefleet`` console script."""

from cinefleet.cli import main

main()
