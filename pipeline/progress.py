"""How a render tells its caller what it is doing, without knowing who listens.

The CLI prints each event as a line; the site scheduler will forward them; tests ignore them.
"""

from __future__ import annotations

import sys
from typing import Protocol, TextIO


class Progress(Protocol):
    def stage(self, name: str, seconds: float, cached: bool, detail: str = "") -> None: ...

    def shot(self, done: int, total: int, shot_id: str, seconds: float, cached: bool) -> None: ...


class Silent:
    def stage(self, name: str, seconds: float, cached: bool, detail: str = "") -> None:
        pass

    def shot(self, done: int, total: int, shot_id: str, seconds: float, cached: bool) -> None:
        pass


class Lines:
    """One human-readable line per finished stage or shot."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream

    def stage(self, name: str, seconds: float, cached: bool, detail: str = "") -> None:
        state = "cached" if cached else "done"
        suffix = f"  {detail}" if detail else ""
        print(f"[stage] {name:<14} {state:<6} {seconds:7.2f}s{suffix}", file=self.stream, flush=True)

    def shot(self, done: int, total: int, shot_id: str, seconds: float, cached: bool) -> None:
        state = "cached" if cached else "rendered"
        print(f"[shot {done:>3}/{total}] {shot_id:<24} {state:<8} {seconds:6.2f}s", file=self.stream, flush=True)
