"""The base of every user-input error of ``alz_core``.

A bad formula, config value, task or metric name, mmengine config file or dataset raises a
subclass of :class:`InvalidValue` whose message is one line naming the input, the value and what
was expected, so a command line can print it as ``error: <message>`` with exit status 2.
"""

from __future__ import annotations


class InvalidValue(ValueError):
    """Bad input from a user; the message is one line."""


def one_line(text: object, limit: int = 400) -> str:
    """``text`` on one line (whitespace collapsed), cut at ``limit`` characters."""
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


__all__ = ["InvalidValue", "one_line"]
