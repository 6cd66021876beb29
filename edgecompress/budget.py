"""Resolve a user's ``--budget`` into the exact number of kept visual tokens K.

Accepted spellings (N is the number of visual tokens per image, 576 for LLaVA-1.5):

- ``"20%"``  a percentage in (0, 100]
- ``"0.2"``  a fraction in (0, 1]; anything with a decimal point is a fraction
- ``"115"``  a plain integer is a token count in [1, N]

The one rounding rule is HiRED's: ``K = min(N, floor(N * rate))``. Arithmetic is exact
(decimal strings become fractions), so ``20%`` of 576 is always 115, never 114 by a
floating-point accident. K never depends on the image; that is what keeps the exported
graph static and its memory known in advance.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from fractions import Fraction

from edgecompress.errors import EdgeCompressError

ROUNDING_RULE = "K = min(N, floor(N * rate)); a count is taken as is"

_NUMBER = re.compile(r"^\d+(\.\d*)?$|^\.\d+$")


@dataclass(frozen=True)
class Budget:
    """A resolved budget: the user's spelling, the rate it stands for, and K."""

    spec: str
    kind: str  # "percent" | "fraction" | "count"
    rate: float  # K / N as requested (for a count: K / N)
    n: int
    k: int
    rule: str = ROUNDING_RULE

    def to_dict(self) -> dict:
        return asdict(self)


def parse_budget(spec: str | float | int) -> tuple[str, Fraction | int]:
    """Parse a budget spelling into ("percent"|"fraction", rate) or ("count", k)."""
    text = str(spec).strip()
    bad = EdgeCompressError(
        f"invalid budget {text!r}",
        hint="Use a percentage (20%), a fraction (0.2) or a token count (115).",
    )
    if text.startswith("-"):
        raise EdgeCompressError(f"budget {text} is negative", hint="A budget must keep at least one token: 20%, 0.2 or 115.")
    if text.endswith("%"):
        number = text[:-1].strip()
        if not _NUMBER.match(number):
            raise bad
        rate = Fraction(number) / 100
        if rate <= 0 or rate > 1:
            raise EdgeCompressError(
                f"budget {text} is out of range", hint="A percentage must be above 0% and at most 100%."
            )
        return "percent", rate
    if not _NUMBER.match(text):
        raise bad
    if "." in text:
        rate = Fraction(text)
        if rate <= 0 or rate > 1:
            raise EdgeCompressError(
                f"budget {text} is out of range",
                hint="A fraction must be above 0 and at most 1 (write 20% or 0.2, or a token count such as 115).",
            )
        return "fraction", rate
    count = int(text)
    if count <= 0:
        raise EdgeCompressError(f"budget {text} keeps no tokens", hint="A token count must be at least 1.")
    return "count", count


def resolve_budget(spec: str | float | int, n: int) -> Budget:
    """Resolve ``spec`` against N visual tokens into a :class:`Budget` with exact K."""
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    kind, value = parse_budget(spec)
    if kind == "count":
        if value > n:
            raise EdgeCompressError(
                f"budget {value} tokens is more than the {n} visual tokens this model has",
                hint=f"Use at most {n}, or a percentage such as 20%.",
            )
        return Budget(spec=str(spec).strip(), kind=kind, rate=value / n, n=n, k=int(value))
    k = min(n, math.floor(n * value))
    if k < 1:
        raise EdgeCompressError(
            f"budget {str(spec).strip()} keeps 0 of {n} visual tokens ({ROUNDING_RULE})",
            hint=f"Use at least {math.ceil(Fraction(100, n) * 100) / 100}% or a token count of 1 or more.",
        )
    return Budget(spec=str(spec).strip(), kind=kind, rate=float(value), n=n, k=k)
