"""Checking the fields of a user's TOML file (a recipe or a profile): one message per bad field,
naming the file, the key and what is allowed.

    fields = Fields(data, "profiles/my-board.toml")
    fields.number("memory_gib", minimum=0, exclusive=True)
    fields.choice("precision", ("fp16", "fp32"))
    fields.only({"name", "memory_gib", ...})
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterable

from edgecompress.errors import EdgeCompressError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # names that become file and folder names


class Fields:
    """Typed access to one TOML table, each getter refusing a bad value with a clear message."""

    def __init__(self, data: Any, path: str, section: str = ""):
        self.path, self.section = path, section
        if not isinstance(data, dict):
            raise EdgeCompressError(f"{path}: [{section}] must be a table")
        self.data = data

    def key(self, name: str) -> str:
        return f"{self.section}.{name}" if self.section else name

    def fail(self, name: str, allowed: str) -> EdgeCompressError:
        return EdgeCompressError(f"{self.path}: {self.key(name)} = {self.data.get(name)!r} is not allowed; {allowed}")

    def only(self, allowed: Iterable[str]) -> None:
        unknown = sorted(set(self.data) - set(allowed))
        if unknown:
            where = f"[{self.section}] " if self.section else ""
            raise EdgeCompressError(f"{self.path}: {where}has unknown keys: {', '.join(unknown)}",
                                    hint=f"Allowed keys: {', '.join(sorted(allowed))}.")

    def require(self, names: Iterable[str]) -> None:
        missing = sorted(n for n in names if n not in self.data)
        if missing:
            raise EdgeCompressError(f"{self.path} lacks {', '.join(self.key(n) for n in missing)}")

    def text(self, name: str, default: str | None = None, *, pattern: re.Pattern | None = None,
             allowed: str = "it must be a string") -> str | None:
        if name not in self.data:
            return default
        value = self.data[name]
        if not isinstance(value, str) or (pattern is not None and not pattern.match(value)):
            raise self.fail(name, allowed)
        return value

    def name(self, name: str) -> str | None:
        return self.text(name, pattern=NAME, allowed="it must be letters, digits, '.', '_' or '-' (it names files and folders)")

    def choice(self, name: str, choices: Iterable[str], default: str | None = None) -> str | None:
        choices = tuple(choices)
        if name not in self.data:
            return default
        if self.data[name] not in choices:
            raise self.fail(name, f"it must be one of {', '.join(choices)}")
        return self.data[name]

    def boolean(self, name: str, default: bool | None = None) -> bool | None:
        if name not in self.data:
            return default
        if not isinstance(self.data[name], bool):
            raise self.fail(name, "it must be true or false")
        return self.data[name]

    def number(self, name: str, default: float | None = None, *, minimum: float | None = None,
               exclusive: bool = False, maximum: float | None = None, integer: bool = False) -> float | int | None:
        """A finite number (an int where ``integer``), at least ``minimum`` (above it where ``exclusive``)."""
        if name not in self.data:
            return default
        value = self.data[name]
        kinds = (int,) if integer else (int, float)
        bound = "" if minimum is None else f" {'above' if exclusive else 'at least'} {minimum:g}"
        bound += "" if maximum is None else f"{' and' if bound else ''} at most {maximum:g}"
        allowed = f"it must be {'an integer' if integer else 'a finite number'}{bound}"
        if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value):
            raise self.fail(name, allowed)
        if minimum is not None and (value <= minimum if exclusive else value < minimum):
            raise self.fail(name, allowed)
        if maximum is not None and value > maximum:
            raise self.fail(name, allowed)
        return value

    def numbers(self, name: str, count: int, *, minimum: float | None = None, exclusive: bool = False) -> list[float] | None:
        """A list of ``count`` finite numbers, each checked as :meth:`number` checks one."""
        if name not in self.data:
            return None
        value = self.data[name]
        bound = "" if minimum is None else f", each {'above' if exclusive else 'at least'} {minimum:g}"
        if not isinstance(value, list) or len(value) != count:
            raise self.fail(name, f"it must be a list of {count} finite numbers{bound}")
        item = Fields({str(i): v for i, v in enumerate(value)}, self.path, self.key(name))
        for i in range(count):
            try:
                item.number(str(i), minimum=minimum, exclusive=exclusive)
            except EdgeCompressError:
                raise self.fail(name, f"it must be a list of {count} finite numbers{bound}") from None
        return value

    def table(self, name: str) -> "Fields":
        return Fields(self.data.get(name, {}), self.path, self.key(name))
