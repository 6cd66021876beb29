"""Progress reporting for long steps, decoupled from any display.

The library reports named steps to a :class:`Steps` object; the CLI passes one that draws
with rich, a Python user gets a silent one by default.
"""

from __future__ import annotations

import contextlib
import time


class Steps:
    """Silent step reporter that records how long each step took."""

    def __init__(self):
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def step(self, key: str, description: str):
        start = time.perf_counter()
        self.started(key, description)
        try:
            yield
        except BaseException:
            self.failed(key, description)
            raise
        self.timings[key] = time.perf_counter() - start
        self.finished(key, description, self.timings[key])

    def started(self, key: str, description: str) -> None:
        pass

    def finished(self, key: str, description: str, seconds: float) -> None:
        pass

    def failed(self, key: str, description: str) -> None:
        pass

    def note(self, message: str) -> None:
        """Something the user should know that is not a step (a default taken, a file dropped)."""
