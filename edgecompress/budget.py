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
from typing import TYPE_CHECKING, NamedTuple

from edgecompress.errors import EdgeCompressError

if TYPE_CHECKING:
    from edgecompress.architecture import Architecture
    from edgecompress.methods import Method

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


class PartitionBudget(NamedTuple):
    """A budget split over LLaVA-NeXT's partitions: ``total`` = base_k + sub_total."""

    total: int
    base_k: int
    sub_total: int


@dataclass(frozen=True)
class Resolution:
    """A budget resolved for one method on one model: what export keeps, what the memory plan
    counts, what the manifest records."""

    budget: Budget  # the user's spelling resolved against every vision slot's N
    k: int  # image tokens the language model reads (pool: its grid; unpruned NeXT: the packed maximum)
    split: PartitionBudget | None = None  # LLaVA-NeXT: the base/tiles split


def resolve_for(spec: str, method: "Method", facts: "Architecture") -> Resolution:
    """The one place a budget becomes K for a method and a model family.

    LLaVA-1.5: K = min(N, floor(N rate)), then the method's own rounding (``output_k``); a
    tower method (ToMe) must be able to merge down to K in the layers up to the feature layer.
    LLaVA-NeXT: against the largest grid, N = (1 + max_tiles) x 576; the method's
    ``partition_alpha`` splits K into base_k = min(floor(K alpha), N) and sub_total = K - base_k,
    refused where the smallest grid's tiles could not hold sub_total (K must be one number).
    The unpruned baseline reads the model's own count (NeXT: the packed maximum).
    """
    n, slots = facts.vision.patches, facts.vision_images
    if method.keeps_all:
        return Resolution(resolve_budget("100%", n * slots), facts.unpruned_image_tokens)
    resolved = resolve_budget(spec, n * slots)
    if slots == 1:
        k = method.output_k(resolved.k, facts.vision.side)
        if method.merge_schedule is not None:  # a tower method: refuse a K its layers cannot reach, before loading
            method.merge_schedule(n, k, facts.used_vision_layers)
        return Resolution(resolved, k)
    if method.partition_alpha is None:
        raise EdgeCompressError(f"method {method.name!r} has no per-partition budget split for LLaVA-NeXT")
    total = resolved.k
    base_k = min(int(total * method.partition_alpha), n)
    split = PartitionBudget(total, base_k, total - base_k)
    min_tiles = min(h * w for h, w in facts.grids)
    capacity = min_tiles * n
    if split.sub_total > capacity:
        largest = (n + capacity) * 100 / (slots * n)
        raise EdgeCompressError(
            f"budget {spec} keeps {total} tokens, {split.sub_total} of them in the tiles; an image tiled "
            f"{min_tiles} tiles has only {capacity}, so K could not be the same for every image",
            hint=f"Use at most {int(largest)}% ({n + capacity} tokens), or --method none to keep every token.",
        )
    if split.base_k < 1 or split.sub_total < 1:
        raise EdgeCompressError(
            f"budget {spec} keeps {total} tokens: too few to give both the base image and the tiles one",
            hint="Use at least 2 tokens (or 0.1%).",
        )
    return Resolution(resolved, total, split)
