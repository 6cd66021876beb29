"""The one exception type a user can meet (defined in the runtime, which the compiler depends on).

Everything the user can get wrong raises :class:`EdgeCompressError` with a message that says
what to do; the CLI prints it without a traceback and exits non-zero. Anything else that
escapes is a bug in edgecompress.
"""

from __future__ import annotations

from edgecompress_runtime.errors import EdgeCompressError

__all__ = ["EdgeCompressError"]
