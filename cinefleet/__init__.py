"""The cinefleet command: the composition root every component contributes to."""
