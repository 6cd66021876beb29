"""The one exception type a user can meet.

Everything the user can get wrong (a bad budget, an unknown model, a corrupt bundle, a
missing backend) raises :class:`EdgeCompressError` with a message that says what to do.
The CLI prints the message without a traceback and exits non-zero; anything else that
escapes is a bug in edgecompress.
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
