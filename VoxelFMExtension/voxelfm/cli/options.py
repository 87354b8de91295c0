"""Option types checked at parse time: a bad value is one exit-2 message before any model loads.

argparse calls these as ``type=``; raising ``argparse.ArgumentTypeError`` makes it print
"voxelfm CMD: error: argument --x: <message>" and exit 2.
"""

from __future__ import annotations

import argparse
import functools
import math
import re
from collections.abc import Callable
from typing import TypeVar

from ..errors import InputError
from ..features.spec import DEVICES
from ..features.spec import PRECISIONS as PRECISIONS  # re-exported: the --precision choices

T = TypeVar("T")

DEVICE_PATTERN = re.compile(rf"^({'|'.join(DEVICES)}|cuda:\d+)$")


def _number(text: str, cast: Callable[[str], float]) -> float:
    try:
        value = cast(text)
    except ValueError:
        if cast is int and _is_float(text):
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; give an integer") from None
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def int_at_least(low: int, high: int | None = None) -> Callable[[str], int]:
    """An integer >= low (and <= high)."""

    def parse(text: str) -> int:
        value = int(_number(text, int))
        if value < low or (high is not None and value > high):
            where = f">= {low}" if high is None else f"in {low}..{high}"
            raise argparse.ArgumentTypeError(f"must be an integer {where}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def float_above(low: float, high: float | None = None, inclusive: bool = False) -> Callable[[str], float]:
    """A finite number > low (>= with ``inclusive``) and <= high."""

    def parse(text: str) -> float:
        value = float(_number(text, float))
        bad_low = value < low if inclusive else value <= low
        if bad_low or (high is not None and value > high):
            op = ">=" if inclusive else ">"
            where = f"{op} {low}" + (f" and <= {high}" if high is not None else "")
            raise argparse.ArgumentTypeError(f"must be a number {where}, got {value:g}")
        return value

    parse.__name__ = "number"
    return parse


def device(text: str) -> str:
    """auto, cpu, mps, cuda or cuda:N (availability is checked when the model is placed)."""
    value = text.strip().lower()
    if not DEVICE_PATTERN.match(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device; use auto, cpu, cuda, cuda:N or mps")
    return value


_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def key_value(text: str) -> str:
    """KEY=VALUE with a dotted config key (the value's type and range are checked with the whole config)."""
    key, sep, _ = text.partition("=")
    if not sep or not _KEY.match(key.strip()):
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE with a dotted key, e.g. optim.epochs=2")
    return text


def validator(parse: Callable[[str], T]) -> Callable[[str], T]:
    """An option type from a parser that raises InputError (the library's own check of a value).

    The library's message becomes argparse's "argument --x: <message>" (exit 2), so a value the library
    would refuse later is refused at parse time instead, before any model loads.
    """

    @functools.wraps(parse)
    def check(text: str) -> T:
        try:
            return parse(text)
        except InputError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return check


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)
positive_float = float_above(0.0)
