"""Typed, frozen, validated configuration of a search (the paper's values are the defaults)."""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from typing import Any

from .errors import InvalidValue
from .graph.ops import OP_NAMES

#: The largest count a search stores: budgets and population sizes end up in 32-bit INTEGER
#: columns of the PostgreSQL store (``search.budget``), so a larger one is refused here, before
#: it reaches the database.
MAX_COUNT = 2 ** 31 - 1


class ConfigError(InvalidValue):
    """A configuration value is out of range; the message names the field and the value."""


def _check(cond: bool, name: str, value: Any, expected: str) -> None:
    if not cond:
        raise ConfigError(f"{name}={value!r} is invalid: expected {expected}")


def _is_int(value: Any) -> bool:
    # the fields below are used as counts and in range(); 2.5 or True must not pass as one
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


class ScoreMode(str, Enum):
    """How the rejection score g(L; xi) is computed from the metric before and after."""

    ABSOLUTE = "absolute"  # the metric of the optimised predictions
    GAIN = "gain"  # the metric after minus the metric before


@dataclass(frozen=True)
class SearchSpaceConfig:
    """What graphs the search may build."""

    init_depth: int = 3  # D
    max_depth: int = 8
    max_size: int = 24  # operator nodes
    ops: tuple[str, ...] = OP_NAMES
    constants: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ops", tuple(self.ops))
        object.__setattr__(self, "constants", tuple(float(c) for c in self.constants))
        _check(_is_int(self.init_depth) and 1 <= self.init_depth <= 6,
               "init_depth", self.init_depth, "an integer in [1, 6]")
        _check(_is_int(self.max_depth) and self.max_depth >= self.init_depth,
               "max_depth", self.max_depth,
               f">= init_depth ({self.init_depth})")
        _check(_is_int(self.max_size) and self.max_size >= 2 ** self.init_depth - 1,
               "max_size", self.max_size,
               f">= {2 ** self.init_depth - 1}, the size of a full tree of depth init_depth")
        unknown = [o for o in self.ops if o not in OP_NAMES]
        _check(not unknown, "ops", unknown, f"operator names from {OP_NAMES}")
        _check(len(set(self.ops)) == len(self.ops) and len(self.ops) > 0, "ops", self.ops,
               "a non-empty list without repeats")
        _check(any(o in ("add", "mul") for o in self.ops), "ops", self.ops,
               "at least one binary operator (add or mul), to combine prediction and target")


@dataclass(frozen=True)
class MutationWeights:
    """Relative probabilities of the mutation kinds (equal by default)."""

    insert: float = 1.0
    delete: float = 1.0
    replace: float = 1.0
    reinit: float = 1.0

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            _check(isinstance(v, (int, float)) and v >= 0, f"mutation_weights.{f.name}", v,
                   "a non-negative number")
        _check(sum(asdict(self).values()) > 0, "mutation_weights", asdict(self),
               "at least one positive weight")


@dataclass(frozen=True)
class EvolutionConfig:
    """Regularised (aging) evolution, seed values: K=20, P=2500, T=5%, budget 500."""

    initial_population: int = 20  # K
    population_size: int = 2500  # P, most recent evaluated individuals
    tournament_fraction: float = 0.05  # T
    budget: int = 500  # proxy evaluations
    max_mutation_tries: int = 200  # attempts at a child that passes rejection, per branch
    mutation_weights: MutationWeights = field(default_factory=MutationWeights)
    #: the smallest tournament: with T = 5 % a tournament of round(0.05 n) would be one member
    #: (a random parent) until the population reaches 30; 1 in searches created before
    tournament_min_size: int = 2

    def __post_init__(self) -> None:
        if isinstance(self.mutation_weights, dict):
            object.__setattr__(self, "mutation_weights", MutationWeights(**self.mutation_weights))
        _check(_is_int(self.initial_population) and 1 <= self.initial_population <= MAX_COUNT,
               "initial_population", self.initial_population,
               f"an integer in [1, {MAX_COUNT}]")
        _check(_is_int(self.population_size)
               and self.initial_population <= self.population_size <= MAX_COUNT,
               "population_size", self.population_size,
               f"an integer in [initial_population ({self.initial_population}), {MAX_COUNT}]")
        _check(isinstance(self.tournament_fraction, numbers.Real)
               and 0 < self.tournament_fraction <= 1, "tournament_fraction",
               self.tournament_fraction, "a fraction in (0, 1]")
        _check(_is_int(self.budget) and 1 <= self.budget <= MAX_COUNT, "budget", self.budget,
               f"an integer in [1, {MAX_COUNT}] (the store's budget column is a 32-bit "
               f"integer)")
        _check(_is_int(self.tournament_min_size) and self.tournament_min_size >= 1,
               "tournament_min_size", self.tournament_min_size, "an integer >= 1")
        _check(_is_int(self.max_mutation_tries) and 1 <= self.max_mutation_tries <= MAX_COUNT,
               "max_mutation_tries", self.max_mutation_tries,
               "an integer >= 1")


@dataclass(frozen=True)
class RejectionConfig:
    """The loss-rejection protocol and the gradient-equivalence check (seed values)."""

    num_samples: int = 5  # B
    iterations: int = 500
    lr: float = 1e-3
    momentum: float = 0.9
    threshold: float = 0.6  # eta
    score_mode: ScoreMode = ScoreMode.ABSOLUTE
    init_std: float = 0.01  # logits ~ N(0, init_std^2) when no model gives them
    seed: int = 0  # samples and initial logits
    fingerprint_digits: int = 6  # significant digits of the float64 gradient fingerprint
    #: ``elementwise``: every gradient element rounded on its own (alz_core.rejection.equivalence);
    #: ``global_cut``: the rule of searches created before it (stored configs without the key)
    fingerprint_scheme: str = "elementwise"
    #: boundary metrics (BIoU, BF1): the rejection protocol optimises the labels' class
    #: boundaries, the targets the proxy trains on (alz_core.rejection); ``False``: the full
    #: one-hot labels (searches created before)
    boundary_targets: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.score_mode, ScoreMode):
            try:
                object.__setattr__(self, "score_mode", ScoreMode(self.score_mode))
            except ValueError:
                raise ConfigError(f"score_mode={self.score_mode!r} is invalid: expected one of "
                                  f"{[m.value for m in ScoreMode]}") from None
        _check(_is_int(self.num_samples) and self.num_samples >= 1,
               "num_samples", self.num_samples, "an integer >= 1")
        _check(_is_int(self.iterations) and self.iterations >= 1,
               "iterations", self.iterations, "an integer >= 1")
        _check(self.lr > 0, "lr", self.lr, "a positive number")
        _check(0 <= self.momentum < 1, "momentum", self.momentum, "a number in [0, 1)")
        _check(-1 <= self.threshold <= 1, "threshold", self.threshold, "a number in [-1, 1]")
        _check(self.init_std > 0, "init_std", self.init_std, "a positive number")
        _check(_is_int(self.fingerprint_digits) and 2 <= self.fingerprint_digits <= 12,
               "fingerprint_digits",
               self.fingerprint_digits, "an integer in [2, 12]")
        _check(self.fingerprint_scheme in ("elementwise", "global_cut"), "fingerprint_scheme",
               self.fingerprint_scheme, "'elementwise' or 'global_cut'")
        _check(isinstance(self.boundary_targets, bool), "boundary_targets",
               self.boundary_targets, "true or false")


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (enums as their values)."""

    def conv(v: Any) -> Any:
        if isinstance(v, Enum):
            return v.value
        if isinstance(v, tuple):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v

    return {k: conv(v) for k, v in asdict(cfg).items()}
