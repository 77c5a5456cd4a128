"""Multi-fidelity proxy evaluation: rungs and asynchronous successive halving (ASHA).

With rungs ``1/9, 1/3, 1`` a candidate first trains a ninth of the proxy schedule; only the best
``promote`` fraction of the results at a rung continues to the next, up to the full schedule.
Promotion is asynchronous, as in ASHA (Li et al., "A System for Massively Parallel
Hyperparameter Tuning", MLSys 2020): whenever a rung-``k`` result arrives, every candidate ranked
within the top ``floor(promote * n_k)`` of the ``n_k`` rung-``k`` results so far, and not promoted
yet, continues to rung ``k + 1``. No worker waits for a rung to fill.

Each rung's run is a whole training with a shorter schedule (the proxy config's schedule
stretched to the rung's iterations, learning-rate decay included), not a slice of a longer one:
a rung-``k`` result is the fitness of a complete short training. Continuing a candidate
therefore retrains it with the next rung's schedule rather than resuming a checkpoint (a
checkpoint of a shorter schedule has already decayed its learning rate to zero); rung ``k``
costs its own fraction of a full proxy run.

Compute is counted in *units*: with rung fractions of least common denominator ``U``, a full
proxy run costs ``U`` units and rung ``k`` costs ``fraction_k * U``. A search's budget of ``B``
full-proxy equivalents is ``B * U`` units; a search without rungs has ``U = 1`` and one rung.

Fitness across rungs: evolution compares candidates first by the highest rung they completed,
then by the metric there (:func:`rank_key`). A candidate that earned a longer training has
beaten the candidates it was ranked against at every lower rung, so it ranks above all
candidates that stopped lower; between candidates of one rung the metric decides, as both
were trained the same way. The search's best fitness and the leaderboard's values are metrics
of the rung each candidate reached (shown with it).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction

from ..config import ConfigError

#: ASHA's usual reduction factor eta = 3: a third of a rung continues
DEFAULT_PROMOTE = Fraction(1, 3)


@dataclass(frozen=True)
class Rungs:
    """The rung schedule of a search: ``fractions`` of the proxy schedule (increasing, the last
    1), the iterations of each (for an iteration-based proxy), the fraction promoted."""

    fractions: tuple[Fraction, ...] = (Fraction(1),)
    promote: Fraction = DEFAULT_PROMOTE
    iterations: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        f = tuple(Fraction(x) for x in self.fractions)
        object.__setattr__(self, "fractions", f)
        object.__setattr__(self, "promote", Fraction(self.promote))
        if not f or f[-1] != 1 or any(not 0 < x <= 1 for x in f) or \
                any(a >= b for a, b in zip(f, f[1:])):
            raise ConfigError(f"rungs={self.text!r} are invalid: expected increasing fractions "
                              f"of the proxy schedule in (0, 1], the last one 1 (e.g. 1/9,1/3,1)")
        if len(f) > 1 and not 0 < self.promote < 1:
            raise ConfigError(f"promote={self.promote} is invalid: expected a fraction in "
                              f"(0, 1), e.g. 1/3")
        if self.iterations is not None:
            its = tuple(int(i) for i in self.iterations)
            if len(its) != len(f) or any(i < 1 for i in its) or \
                    any(a >= b for a, b in zip(its, its[1:])):
                raise ConfigError(f"rungs={self.text!r} give iterations {list(its)}: expected "
                                  f"increasing positive counts (a longer proxy schedule, or "
                                  f"fewer rungs)")
            object.__setattr__(self, "iterations", its)

    @property
    def text(self) -> str:
        return ",".join(str(x) for x in self.fractions)

    @property
    def count(self) -> int:
        return len(self.fractions)

    @property
    def top(self) -> int:
        """Index of the full-schedule rung."""
        return len(self.fractions) - 1

    @property
    def units_per_proxy(self) -> int:
        """``U``: the least common denominator of the fractions (a full proxy run's units)."""
        return math.lcm(*(x.denominator for x in self.fractions))

    @property
    def units(self) -> tuple[int, ...]:
        """The cost of each rung's run in units."""
        u = self.units_per_proxy
        return tuple(int(x * u) for x in self.fractions)

    def with_iterations(self, proxy_iterations: int) -> Rungs:
        """These rungs for a proxy schedule of ``proxy_iterations`` iterations."""
        its = tuple(max(1, round(x * proxy_iterations)) for x in self.fractions)
        return Rungs(self.fractions, self.promote, its)

    def to_json(self) -> dict[str, object]:
        return {"fractions": [str(x) for x in self.fractions], "promote": str(self.promote),
                "iterations": None if self.iterations is None else list(self.iterations),
                "units": list(self.units)}

    @classmethod
    def from_json(cls, data: dict[str, object] | None) -> Rungs:
        if not data:
            return cls()
        its = data.get("iterations")
        return cls(tuple(Fraction(str(x)) for x in data["fractions"]),  # type: ignore[union-attr]
                   Fraction(str(data.get("promote", DEFAULT_PROMOTE))),
                   None if its is None else tuple(its))  # type: ignore[arg-type]


def parse_fraction(text: str, what: str) -> Fraction:
    try:
        value = Fraction(text.strip())
    except (ValueError, ZeroDivisionError):
        raise ConfigError(f"{what}={text!r} is invalid: expected a fraction such as 1/3 or "
                          f"0.5") from None
    return value


def parse_rungs(text: str, promote: str | None = None) -> Rungs:
    """``"1/9,1/3,1"`` (and ``promote`` ``"1/3"``) as :class:`Rungs`; one-line
    :class:`~alz_core.config.ConfigError` otherwise."""
    parts = [p for p in str(text).split(",") if p.strip()]
    if not parts:
        raise ConfigError(f"rungs={text!r} is invalid: expected fractions such as 1/9,1/3,1")
    fractions = tuple(parse_fraction(p, "rungs") for p in parts)
    share = DEFAULT_PROMOTE if promote is None else parse_fraction(promote, "promote")
    return Rungs(fractions, share)


def rank_key(rung: int, fitness: float | None) -> tuple[int, float]:
    """The order of candidates across rungs: the higher rung first, then the metric (a
    diverged run, ``None``, ranks below every metric of its rung)."""
    return (int(rung), -math.inf if fitness is None else float(fitness))


def promotions(results: Sequence[tuple[int, float | None]], promote: Fraction,
               promoted: Iterable[int]) -> list[int]:
    """ASHA's rule at one rung: of the ``(candidate, fitness)`` results so far, the candidates
    within the top ``floor(promote * n)`` that are not in ``promoted`` yet, best first.

    Ties are broken by arrival (the earlier result first): ``results`` in arrival order. A
    diverged result (``None``) is never promoted.
    """
    done = set(promoted)
    n = len(results)
    keep = math.floor(Fraction(promote) * n)
    order = sorted(range(n), key=lambda i: (rank_key(0, results[i][1]), -i), reverse=True)
    top = [results[i] for i in order[:keep]]
    return [cid for cid, fit in top if fit is not None and cid not in done]
