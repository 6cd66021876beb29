"""The one exception type a user can meet, shared by the runtime and the compiler.

Everything the user can get wrong (a bad budget, an unknown model, a corrupt bundle, an image
that cannot be read) raises :class:`EdgeCompressError` with a message that says what to do.
Command lines print the message without a traceback and exit non-zero.
"""

from __future__ import annotations


class EdgeCompressError(Exception):
    """An error caused by the user's input or environment, with an actionable message."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.hint = hint

    def __str__(self) -> str:
        message = super().__str__()
        return f"{message}\n{self.hint}" if self.hint else message
