import pytest

from edgecompress.budget import resolve_budget
from edgecompress.compiler import default_bundle_name
from edgecompress.errors import EdgeCompressError


@pytest.mark.parametrize(
    "spec, k",
    [
        ("20%", 115),  # floor(576 * 0.2) = floor(115.2)
        ("0.2", 115),
        ("115", 115),
        ("100%", 576),
        ("1.0", 576),
        ("50%", 288),
        ("10%", 57),  # floor(57.6): HiRED floors, never rounds up
        ("5%", 28),
        ("12.5%", 72),
        ("1", 1),  # a plain integer is a count
        ("576", 576),
    ],
)
def test_budget_resolves_with_hireds_floor_rule(spec, k):
    assert resolve_budget(spec, 576).k == k


def test_percent_arithmetic_is_exact():
    # 0.29 * 100 in floats is 28.999999999999996; exact fractions make 29% of 100 tokens 29.
    assert resolve_budget("29%", 100).k == 29
    assert resolve_budget("0.29", 100).k == 29


@pytest.mark.parametrize(
    "spec, words",
    [
        ("0", "keeps no tokens"),
        ("0%", "out of range"),
        ("0.0", "out of range"),
        ("-1", "negative"),
        ("-20%", "negative"),
        ("101%", "out of range"),
        ("1.5", "out of range"),
        ("577", "more than the 576"),
        ("abc", "invalid budget"),
        ("20 %%", "invalid budget"),
        ("", "invalid budget"),
        ("0.001", "keeps 0 of 576"),
    ],
)
def test_bad_budgets_are_refused_with_a_reason(spec, words):
    with pytest.raises(EdgeCompressError, match=words):
        resolve_budget(spec, 576)


def test_default_bundle_names():
    assert default_bundle_name("tiny-llava-random", "hired", "20%") == "tiny-llava-random-hired-b20"
    assert default_bundle_name("tiny-llava-random", "hired", "0.2") == "tiny-llava-random-hired-b20"
    assert default_bundle_name("tiny-llava-random", "hired", "115") == "tiny-llava-random-hired-k115"
    assert default_bundle_name("tiny-llava-random", "hired", "12.5%") == "tiny-llava-random-hired-b12p5"
    assert default_bundle_name("tiny-llava-random", "none", "100%") == "tiny-llava-random-none"
    assert default_bundle_name("tiny-llava", "fastv", "20%", layer=3) == "tiny-llava-fastv-l3-b20"  # --layer given
