"""How numbers print wherever a person reads them: the report (HTML and Markdown) and `fcn-sweep status`.

Two kinds of number, two rules. A parameter value (a learning rate, a weight decay, a dropout
rate) spans decades, so it gets three significant digits: 1.1e-4 prints as `0.00011`, 3.8e-5 as
`3.8e-5`, never as `0.0000`. An accuracy lies in [0, 1] and is compared with its neighbours, so it
gets fixed decimals that line up in a column.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

DIGITS = 3  # significant digits of a parameter value
DECIMALS = 4  # decimals of an accuracy
MISSING = "–"


def sig(x: float, digits: int = DIGITS) -> str:
    """`digits` significant digits, with a short exponent (`3.8e-5`) only where plain decimals
    would need more than four leading zeros; whole numbers of any size in full (`1024`)."""
    if not math.isfinite(x):
        return str(x)
    if x == int(x) and abs(x) < 1e15:
        return str(int(x))
    text = f"{x:.{digits}g}"
    mantissa, e, exponent = text.partition("e")
    return f"{mantissa}e{int(exponent)}" if e else text


def value(v: Any, missing: str = MISSING) -> str:
    """A parameter value as a reader wants it: numbers to three significant digits, lists as their
    label (`1024-256`), booleans as `true`/`false`, names unchanged."""
    if v is None:
        return missing
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return sig(v)
    if isinstance(v, (list, tuple)):
        return "-".join(value(x) for x in v)
    return str(v)


def span(lo: float, hi: float) -> str:
    """A range of parameter values (a bin): `0.0001–0.00032`; one value when the bin holds only one."""
    return sig(lo) if sig(lo) == sig(hi) else f"{sig(lo)}–{sig(hi)}"


def metric(x: float | None, decimals: int = DECIMALS, missing: str = MISSING) -> str:
    """An accuracy (or another number in [0, 1]) with fixed decimals."""
    return missing if x is None else f"{x:.{decimals}f}"


class _Stat(Protocol):
    mean: float
    std: float
    n: int


def pm(s: _Stat | None, decimals: int = DECIMALS, missing: str = MISSING) -> str:
    """Mean ± sample standard deviation, or the mean alone when it rests on one value."""
    if s is None:
        return missing
    return f"{s.mean:.{decimals}f} ± {s.std:.{decimals}f}" if s.n > 1 else f"{s.mean:.{decimals}f}"


def plural(n: int, word: str, many: str | None = None) -> str:
    """`1 run`, `2 runs`, `0 runs`: a count with its noun in the right number."""
    return f"{n} {word if n == 1 else many or word + 's'}"
