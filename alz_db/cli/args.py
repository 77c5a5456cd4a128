"""Argument types of every command line (``alz``, ``alz-worker``): numbers in ASCII, within
the range each option allows, checked by argparse before anything runs.

``int()`` and ``float()`` take more than a user means: ``'١٢'`` (Arabic-Indic digits),
``'1_000'``, ``'nan'``, ``'inf'``, ``'1e999'``; and an integer option without a bound sends
``--budget 3000000000`` to a 32-bit column, ``--size 100000`` to a terabyte allocation. Each
option here names its range, and a value outside it is one line of usage error (exit status
2), e.g. ``alz search create: error: argument --budget: 0 is out of range: expected an
integer in [1, 2147483647]``.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Sequence

#: 32-bit INTEGER columns of the store (budgets, population sizes, counts)
MAX_INT32 = 2 ** 31 - 1
#: seeds: numpy's legacy seeding (mmengine's ``set_random_seed``) takes at most 2**32 - 1, and
#: the search adds offsets to its seed (one per proxy seed and rung), so seeds stay in int32
MAX_SEED = 2 ** 31 - 1
#: the largest integer any option takes (a BIGINT id)
MAX_INTEGER = 2 ** 63 - 1

_INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")


class Integer:
    """``type=`` of an integer option: ASCII digits with an optional sign, in ``[low, high]``."""

    def __init__(self, low: int | None = None, high: int = MAX_INTEGER) -> None:
        self.low, self.high = low, high
        self.__name__ = "integer"  # argparse names the type in its messages

    def range_text(self) -> str:
        if self.low is None:
            return f"an integer of magnitude at most {self.high}"
        return f"an integer in [{self.low}, {self.high}]"

    def __call__(self, text: str) -> int:
        t = text.strip()
        if not _INTEGER_TEXT.fullmatch(t):
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer (expected ASCII "
                                             f"digits, e.g. 5)")
        value = int(t)
        low = -self.high if self.low is None else self.low
        if not low <= value <= self.high:
            shown = t if len(t) <= 30 else f"{t[:20]}... ({len(t)} digits)"
            raise argparse.ArgumentTypeError(f"{shown} is out of range: expected "
                                             f"{self.range_text()}")
        return value

    def __repr__(self) -> str:
        return f"Integer({self.low}, {self.high})"


class Number:
    """``type=`` of a real-valued option: a finite number in ASCII, in ``(low, high]`` or
    ``[low, high]`` as ``low_open`` says (``None``: unbounded on that side)."""

    def __init__(self, low: float | None = None, high: float | None = None, *,
                 low_open: bool = False) -> None:
        self.low, self.high, self.low_open = low, high, low_open
        self.__name__ = "number"

    def range_text(self) -> str:
        if self.low is None and self.high is None:
            return "a finite number"
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        return (f"a number in {'(' if self.low_open or self.low is None else '['}{lo}, {hi}"
                f"{')' if self.high is None else ']'}")

    def __call__(self, text: str) -> float:
        t = text.strip()
        try:
            value = float(t) if t.isascii() and "_" not in t else None
        except ValueError:
            value = None
        if value is None:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number (expected e.g. 0.5)")
        too_low = self.low is not None and (value <= self.low if self.low_open
                                            else value < self.low)
        too_high = self.high is not None and value > self.high
        if not math.isfinite(value) or too_low or too_high:
            raise argparse.ArgumentTypeError(f"{t} is out of range: expected "
                                             f"{self.range_text()}")
        return value

    def __repr__(self) -> str:
        return f"Number({self.low}, {self.high}, low_open={self.low_open})"


# the ranges the commands share
count = Integer(1, MAX_INT32)  # budgets, population sizes, iterations, trials, limits
count_or_zero = Integer(0, MAX_INT32)
seed = Integer(0, MAX_SEED)
procs = Integer(1, 1024)  # local processes
procs_or_zero = Integer(0, 1024)
threads = Integer(1, 1024)
fraction = Number(0.0, 1.0, low_open=True)  # (0, 1]
positive = Number(0.0, None, low_open=True)  # (0, inf)
real = Number()
port = Integer(1, 65535)


def utf8_problem(argv: Sequence[str]) -> str | None:
    """The first argument that is not valid UTF-8 text (bytes the shell passed in, which
    Python keeps as lone surrogates): it could be stored, printed or looked up nowhere."""
    for i, arg in enumerate(argv, 1):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            return (f"argument {i} ({ascii(arg)}) is not valid UTF-8 text (names, paths and "
                    f"formulas are stored and shown as UTF-8)")
    return None


class OneLineParser(argparse.ArgumentParser):
    """argparse with the command lines' error convention: one line ``error: PROG: ...`` on
    stderr (no usage block) and exit status 2; sub-parsers inherit it."""

    def error(self, message: str):  # noqa: ANN201 - NoReturn
        print(f"error: {self.prog}: {message}", file=sys.stderr)
        sys.exit(2)
