"""The search-efficiency study of the paper's appendix C (Figure 4, Table 8), without a database.

Five arms are run on the same task, budget and seeds; each adds one component to the previous
one:

``random``
    random search: every proxy evaluation is a fresh random graph (valid by construction:
    it uses the prediction and the target), no rejection, no equivalence check;
``evolution``
    regularised evolution (tournament + mutation), every valid child is trained;
``evolution+rejection``
    evolution whose initial graphs and children must pass the loss-rejection protocol;
``evolution+rejection+equivalence``
    the whole method: a child whose gradient fingerprint equals an evaluated loss's reuses its
    fitness without a proxy run;
``evolution+rejection+equivalence+rungs``
    the whole method with multi-fidelity promotion (:mod:`alz_core.evolution.rungs`): each new
    candidate first trains the shortest rung, only the best fraction continues. Its budget
    counts full-proxy equivalents, and only its full-schedule results count as fitnesses.

Equal compute: with ``compute_budget`` every arm stops once that many seconds of compute were
charged to it, and the arms are compared by the best full-proxy fitness charged within it
(paired by seed against the arm before: :meth:`AblationResult.paired_wins`). At an equal number
of proxy evaluations the arms with rejection are charged more compute than the others (their
rejection checks); the study reports both axes.

All four share :func:`alz_core.evolution.regularized.run_evolution` (random search is evolution
whose initial population is the whole budget). The arms of one seed draw from the same generator
seed, so (c) and (d) start from the same initial population.

What is measured per (arm, seed) in a :class:`ArmTrace`: the fitness of every proxy evaluation
in order and the best so far, how many losses were explored (graphs generated; for the arms
with rejection, graphs checked by the protocol), rejections, reused fitnesses, and the compute
charged to the arm (rejection checks, fingerprints and proxy trainings, each as measured).
"Losses explored per hour" is explored / charged hours, the paper's Table 8 quantity.

Proxy trainings and rejection checks are deterministic for a fixed seed (CPU), so the callers
may serve repeated graphs from a cache (:class:`MeasuredCache`): the arm is still charged the
seconds the first run took, and the number of proxy evaluations it used is unchanged. This only
saves wall-clock time when several arms meet the same loss (the arms of one seed share their
first draws).

The figure and the Markdown table are :mod:`alz_core.evolution.ablation_report`'s.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ConfigError, EvolutionConfig, SearchSpaceConfig
from ..graph.expr import BranchKind
from ..graph.loss_graph import LossGraph
from ..rejection.result import RejectionResult, StopReason, Verdict
from .candidate import Candidate
from .regularized import SearchEvent, SearchExhausted, run_evolution
from .rungs import Rungs, parse_rungs


@dataclass(frozen=True)
class Arm:
    """One configuration of the study."""

    name: str
    label: str
    evolution: bool
    rejection: bool
    equivalence: bool
    rungs: bool = False


ARMS: tuple[Arm, ...] = (
    Arm("random", "(a) random search", False, False, False),
    Arm("evolution", "(b) evolution", True, False, False),
    Arm("evolution+rejection", "(c) evolution + loss rejection", True, True, False),
    Arm("evolution+rejection+equivalence",
        "(d) evolution + loss rejection + gradient equivalence", True, True, True),
    Arm("evolution+rejection+equivalence+rungs",
        "(e) evolution + loss rejection + gradient equivalence + rungs", True, True, True,
        True),
)
#: the arm each arm adds one component to (the paired comparisons of the study)
PREVIOUS_ARM = {ARMS[i].name: ARMS[i - 1].name for i in range(1, len(ARMS))}
ARM_NAMES: tuple[str, ...] = tuple(a.name for a in ARMS)
#: an arm stops with SearchExhausted after this many individuals per budgeted evaluation
MAX_INDIVIDUALS_PER_EVALUATION = 50
_ARMS_BY_NAME = {a.name: a for a in ARMS}


def get_arm(name: str) -> Arm:
    """The arm called ``name``; ``ConfigError`` naming the known arms otherwise."""
    try:
        return _ARMS_BY_NAME[name]
    except KeyError:
        raise ConfigError(f"arm={name!r} is invalid: expected one of "
                          f"{', '.join(ARM_NAMES)}") from None


@dataclass(frozen=True)
class AblationConfig:
    """The shared settings of every arm.

    ``budget`` proxy evaluations per (arm, seed); ``initial_population`` K and
    ``population_size`` P and ``tournament_fraction`` T of the evolution arms (random search
    uses K = budget); ``seeds``: one run of every arm per seed.
    """

    budget: int = 20
    seeds: tuple[int, ...] = (0, 1, 2)
    initial_population: int = 5
    population_size: int = 2500
    tournament_fraction: float = 0.25
    arms: tuple[str, ...] = ARM_NAMES
    max_mutation_tries: int = 200
    #: the rungs of arm (e) (fractions of the proxy schedule) and its promotion fraction
    rungs: str = "1/9,1/3,1"
    promote: str = "1/3"
    #: stop every arm once this much compute (seconds charged) is spent; ``budget`` is then
    #: only a cap on proxy evaluations (equal compute instead of equal evaluations)
    compute_budget: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.budget, int) or self.budget < 1:
            raise ConfigError(f"budget={self.budget!r} is invalid: expected an integer >= 1")
        if not self.seeds:
            raise ConfigError("seeds=() is invalid: expected at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds={self.seeds!r} is invalid: expected distinct seeds")
        if not 1 <= self.initial_population <= self.budget:
            raise ConfigError(f"initial_population={self.initial_population!r} is invalid: "
                              f"expected 1 <= K <= budget ({self.budget})")
        if not self.arms:
            raise ConfigError("arms=() is invalid: expected at least one arm")
        for a in self.arms:
            get_arm(a)
        if self.compute_budget is not None and not (
                isinstance(self.compute_budget, (int, float)) and
                math.isfinite(self.compute_budget) and self.compute_budget > 0):
            raise ConfigError(f"compute_budget={self.compute_budget!r} is invalid: expected "
                              f"a positive number of seconds")
        self.rung_schedule()
        # the remaining fields are validated by EvolutionConfig
        self.evolution(get_arm(self.arms[0]))

    def rung_schedule(self) -> Rungs:
        """The rungs of arm (e) (fractions only; the proxy's iterations are the caller's)."""
        return parse_rungs(self.rungs, self.promote)

    def evolution(self, arm: Arm) -> EvolutionConfig:
        """The evolution settings of ``arm`` (random search: K = budget)."""
        k = self.initial_population if arm.evolution else self.budget
        return EvolutionConfig(initial_population=k,
                               population_size=max(self.population_size, k),
                               tournament_fraction=self.tournament_fraction,
                               budget=self.budget, max_mutation_tries=self.max_mutation_tries)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "seeds": list(self.seeds), "arms": list(self.arms)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AblationConfig:
        d = dict(data)
        d["seeds"] = tuple(d.get("seeds", (0,)))
        d["arms"] = tuple(d.get("arms", ARM_NAMES))
        return cls(**d)


@dataclass
class ArmTrace:
    """What one arm did with one seed."""

    arm: str
    seed: int
    fitness: list[float | None] = field(default_factory=list)  # per proxy evaluation
    formulas: list[str] = field(default_factory=list)  # per proxy evaluation
    individuals: int = 0  # members added to the population (evaluated or reused)
    reused: int = 0  # members that took an equivalent loss's fitness (no proxy run)
    rejection_checks: int = 0
    rejected: int = 0
    explored: int = 0  # losses looked at: generated graphs, or graphs checked by rejection
    rejection_seconds: float = 0.0
    fingerprint_seconds: float = 0.0
    proxy_seconds: float = 0.0
    wall_seconds: float = 0.0
    #: per proxy evaluation: its rung (0 = the full proxy for arms without rungs; for arm (e)
    #: only results of the top rung count as full-proxy fitnesses) and the compute charged
    #: to the arm once it was done (seconds)
    rungs: list[int] = field(default_factory=list)
    charged: list[float] = field(default_factory=list)
    top_rung: int = 0
    stopped_by: str = "budget"  # or "compute"

    @property
    def evaluations(self) -> int:
        return len(self.fitness)

    @property
    def full_proxy_evaluations(self) -> int:
        """Evaluations at the full proxy schedule (all of them without rungs)."""
        return sum(1 for k in range(len(self.fitness)) if self._is_full(k))

    def _is_full(self, k: int) -> bool:
        return not self.rungs or self.rungs[k] == self.top_rung

    @property
    def best_curve(self) -> list[float | None]:
        """Best finite full-proxy fitness after each proxy evaluation (``None`` until there is
        one)."""
        out: list[float | None] = []
        best: float | None = None
        for k, f in enumerate(self.fitness):
            if self._is_full(k) and f is not None and math.isfinite(f) and \
                    (best is None or f > best):
                best = f
            out.append(best)
        return out

    def best_at(self, seconds: float) -> float | None:
        """Best full-proxy fitness once ``seconds`` of compute were charged."""
        best = None
        for value, spent in zip(self.best_curve, self.charged):
            if spent > seconds:
                break
            best = value
        return best

    @property
    def best(self) -> tuple[float | None, str | None]:
        """``(fitness, formula)`` of the best full-proxy result (first one on ties)."""
        best, formula = None, None
        for k, (f, text) in enumerate(zip(self.fitness, self.formulas)):
            if self._is_full(k) and f is not None and math.isfinite(f) and \
                    (best is None or f > best):
                best, formula = f, text
        return best, formula

    @property
    def charged_seconds(self) -> float:
        return self.rejection_seconds + self.fingerprint_seconds + self.proxy_seconds

    @property
    def explored_per_hour(self) -> float | None:
        s = self.charged_seconds
        return None if s <= 0 else self.explored * 3600.0 / s

    @property
    def diverged(self) -> int:
        return sum(f is None for f in self.fitness)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ArmTrace:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in dict(data).items() if k in known})


@dataclass
class AblationResult:
    """Every trace of a study, with the settings and the task they were run on."""

    config: AblationConfig
    task: str
    metric: str
    traces: list[ArmTrace] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)  # proxy iterations etc., as run

    def traces_of(self, arm: str) -> list[ArmTrace]:
        return sorted((t for t in self.traces if t.arm == arm), key=lambda t: t.seed)

    @property
    def arms(self) -> list[str]:
        """Arms with at least one trace, in the study's order."""
        present = {t.arm for t in self.traces}
        return [a for a in ARM_NAMES if a in present]

    def curve(self, arm: str) -> dict[str, list[float | None]]:
        """Best fitness against proxy evaluations across the arm's seeds: mean, std, min, max
        at each evaluation count (seeds without a finite fitness yet are left out)."""
        traces = self.traces_of(arm)
        n = max((t.evaluations for t in traces), default=0)
        out: dict[str, list[float | None]] = {"mean": [], "std": [], "min": [], "max": [],
                                              "seeds": []}
        curves = [t.best_curve for t in traces]
        for k in range(n):
            vals = [c[k] for c in curves if k < len(c) and c[k] is not None]
            out["seeds"].append(len(vals))
            if vals:
                a = np.asarray(vals, dtype=float)
                out["mean"].append(float(a.mean()))
                out["std"].append(float(a.std(ddof=1)) if len(a) > 1 else 0.0)
                out["min"].append(float(a.min()))
                out["max"].append(float(a.max()))
            else:
                for key in ("mean", "std", "min", "max"):
                    out[key].append(None)
        return out

    def summary(self) -> list[dict[str, Any]]:
        """One row per arm: final best fitness (mean, std, min, max over seeds), the mean best
        after half the budget, the mean area under the best-so-far curve (anytime quality),
        diverged evaluations, rejection rate, reused fitnesses, and losses explored per
        charged hour (mean over seeds)."""
        rows = []
        cap = self.config.compute_budget
        for arm in self.arms:
            traces = self.traces_of(arm)
            # at equal compute: the best full-proxy result charged within the budget (the run
            # that crossed it is not counted)
            finals = [t.best_at(cap) if cap is not None else t.best[0] for t in traces]
            finite = np.asarray([f for f in finals if f is not None], dtype=float)
            half = [c[len(c) // 2 - 1] if len(c) >= 2 else (c[-1] if c else None)
                    for c in (t.best_curve for t in traces)]
            half_f = [h for h in half if h is not None]
            areas = [float(np.mean([v if v is not None else 0.0 for v in t.best_curve]))
                     for t in traces if t.evaluations]
            evals = sum(t.evaluations for t in traces)
            checks = sum(t.rejection_checks for t in traces)
            per_hour = [t.explored_per_hour for t in traces if t.explored_per_hour is not None]
            best_idx = int(np.argmax([-np.inf if f is None else f for f in finals])) \
                if finals else 0
            rows.append({
                "arm": arm,
                "label": get_arm(arm).label,
                "seeds": len(traces),
                "evaluations": evals,
                "best_mean": float(finite.mean()) if finite.size else None,
                "best_std": float(finite.std(ddof=1)) if finite.size > 1 else
                (0.0 if finite.size else None),
                "best_min": float(finite.min()) if finite.size else None,
                "best_max": float(finite.max()) if finite.size else None,
                "best_at_half_mean": float(np.mean(half_f)) if half_f else None,
                "curve_area_mean": float(np.mean(areas)) if areas else None,
                "diverged_fraction": (sum(t.diverged for t in traces) / evals) if evals else None,
                "rejection_rate": (sum(t.rejected for t in traces) / checks) if checks else None,
                "reused": sum(t.reused for t in traces),
                "explored": sum(t.explored for t in traces),
                "explored_per_hour": float(np.mean(per_hour)) if per_hour else None,
                "charged_hours": sum(t.charged_seconds for t in traces) / 3600.0,
                "charged_seconds_mean": float(np.mean([t.charged_seconds for t in traces]))
                if traces else None,
                "full_proxy_evaluations": sum(t.full_proxy_evaluations for t in traces),
                "wins_over_previous": self.paired_wins(arm),
                "best_formula": traces[best_idx].best[1] if traces else None,
            })
        return rows

    def paired_wins(self, arm: str) -> dict[str, Any] | None:
        """Seed by seed, ``arm``'s final best against the arm it adds one component to
        (:data:`PREVIOUS_ARM`): wins, ties and losses, and the mean difference."""
        other = PREVIOUS_ARM.get(arm)
        if other is None or other not in self.arms:
            return None
        cap = self.config.compute_budget

        def final(t: ArmTrace) -> float | None:
            return t.best_at(cap) if cap is not None else t.best[0]

        mine = {t.seed: final(t) for t in self.traces_of(arm)}
        theirs = {t.seed: final(t) for t in self.traces_of(other)}
        wins = ties = losses = 0
        diffs = []
        for seed in sorted(set(mine) & set(theirs)):
            a, b = mine[seed], theirs[seed]
            a_v, b_v = (-math.inf if a is None else a), (-math.inf if b is None else b)
            wins += a_v > b_v
            ties += a_v == b_v
            losses += a_v < b_v
            if a is not None and b is not None:
                diffs.append(a - b)
        return {"against": other, "wins": wins, "ties": ties, "losses": losses,
                "mean_difference": float(np.mean(diffs)) if diffs else None}

    def compute_curve(self, arm: str, points: int = 50) -> dict[str, list[float | None]]:
        """Best full-proxy fitness against charged compute: mean and std over the arm's seeds
        at ``points`` evenly spaced compute levels (seconds)."""
        traces = self.traces_of(arm)
        top = self.config.compute_budget or max(
            (t.charged[-1] for t in traces if t.charged), default=0.0)
        xs = [top * (i + 1) / points for i in range(points)]
        out: dict[str, list[float | None]] = {"seconds": xs, "mean": [], "std": []}
        for x in xs:
            vals = [v for v in (t.best_at(x) for t in traces) if v is not None]
            out["mean"].append(float(np.mean(vals)) if vals else None)
            out["std"].append(float(np.std(vals, ddof=1)) if len(vals) > 1 else None)
        return out

    def to_json(self) -> dict[str, Any]:
        return {"task": self.task, "metric": self.metric, "config": self.config.to_json(),
                "settings": dict(self.settings), "traces": [t.to_json() for t in self.traces],
                "summary": self.summary()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str) -> AblationResult:
        if isinstance(data, str):
            data = json.loads(data)
        return cls(AblationConfig.from_json(data["config"]), data["task"], data["metric"],
                   [ArmTrace.from_json(t) for t in data["traces"]],
                   dict(data.get("settings", {})))

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_json` to ``path`` (parents created)."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_json(), indent=1))
        return p


# --- measured, cached callbacks ------------------------------------------------------------------
class MeasuredCache:
    """Memoises a deterministic, costly function by a text key and remembers what the first
    call took: ``__call__`` returns ``(value, seconds)``, the seconds of the first call even
    when the value comes from the cache (the arm is charged what the work costs). ``clock``:
    :func:`time.process_time` charges the process's CPU seconds (what ``alz ablation`` uses:
    other load on the machine does not change an arm's budget), the default wall seconds."""

    def __init__(self, fn: Callable[[Any], Any], key: Callable[[Any], str],
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.fn, self.key, self.clock = fn, key, clock
        self.store: dict[str, tuple[Any, float]] = {}
        self.hits = 0
        self.misses = 0

    def __call__(self, arg: Any) -> tuple[Any, float]:
        k = self.key(arg)
        if k in self.store:
            self.hits += 1
            return self.store[k]
        t0 = self.clock()
        value = self.fn(arg)
        out = (value, self.clock() - t0)
        self.store[k] = out
        self.misses += 1
        return out


def accept_valid(branch: str, graph: LossGraph) -> RejectionResult:
    """The "no rejection" check of arms (a) and (b): accept every graph (the generators only
    make valid ones), at no cost."""
    return RejectionResult(Verdict.ACCEPT, None, 0.0, None, None, 0, 0.0, StopReason.NOT_RUN)


ProxyFn = Callable[[Candidate], tuple[float | None, float]]  # (fitness, seconds)
RungProxyFn = Callable[[Candidate, int], tuple[float | None, float]]  # (fitness, seconds)
CheckFn = Callable[[str, LossGraph], RejectionResult]  # result.seconds is charged
FingerprintFn = Callable[[Candidate], tuple[str | None, float]]  # (fingerprint, seconds)


def run_arm(arm: Arm | str, seed: int, config: AblationConfig,
            branches: Mapping[str, BranchKind], proxy: ProxyFn, check: CheckFn,
            fingerprint: FingerprintFn, space: SearchSpaceConfig | None = None,
            on_evaluation: Callable[[ArmTrace], None] | None = None,
            rung_proxy: RungProxyFn | None = None) -> ArmTrace:
    """Run one arm with one seed until ``config.budget`` proxy evaluations are used (full-proxy
    equivalents for the arm with rungs), or, with ``config.compute_budget``, until that much
    compute was charged.

    ``proxy`` trains a candidate and returns ``(fitness, seconds)`` (``None``: diverged);
    ``rung_proxy(candidate, rung)`` trains one rung of the arm with rungs (rung = the index in
    ``config.rung_schedule()``); ``check`` is the loss-rejection protocol (used only by the
    arms with rejection); ``fingerprint`` the gradient fingerprint (only by the arms with the
    equivalence check). ``on_evaluation`` is called after every proxy evaluation.
    """
    arm = get_arm(arm) if isinstance(arm, str) else arm
    trace = ArmTrace(arm.name, int(seed))
    rungs = config.rung_schedule() if arm.rungs else None
    if rungs is not None:
        if rung_proxy is None:
            raise ConfigError(f"arm {arm.name!r} needs a rung_proxy (its runs are rungs)")
        trace.top_rung = rungs.top
    t0 = time.perf_counter()

    def spend() -> None:
        if config.compute_budget is not None and \
                trace.charged_seconds >= config.compute_budget:
            raise _ComputeSpent

    def reject(branch: str, graph: LossGraph) -> RejectionResult:
        spend()
        trace.explored += 1
        if not arm.rejection:
            return accept_valid(branch, graph)
        result = check(branch, graph)
        trace.rejection_checks += 1
        trace.rejected += not result.accepted
        trace.rejection_seconds += result.seconds
        return result

    def fp(cand: Candidate) -> str | None:
        if not arm.equivalence:
            return None
        value, seconds = fingerprint(cand)
        trace.fingerprint_seconds += seconds
        return value

    def evaluate(cand: Candidate, rung: int | None = None) -> float | None:
        spend()
        fitness, seconds = proxy(cand) if rung is None else rung_proxy(cand, rung)
        if fitness is not None and not math.isfinite(fitness):
            fitness = None
        trace.proxy_seconds += seconds
        trace.fitness.append(fitness)
        trace.formulas.append(cand.text)
        trace.rungs.append(0 if rung is None else rung)
        trace.charged.append(trace.charged_seconds)
        if on_evaluation is not None:
            on_evaluation(trace)
        return fitness

    def on_event(ev: SearchEvent) -> None:
        trace.individuals += 1
        trace.reused += ev.reused
        units = 1 if rungs is None else rungs.units_per_proxy
        if trace.individuals > MAX_INDIVIDUALS_PER_EVALUATION * config.budget * units:
            # reused fitnesses use no budget: a search space whose equivalence classes are
            # all evaluated would otherwise never end
            raise SearchExhausted(f"arm {arm.name!r} seed {seed}: {trace.individuals} "
                                  f"individuals for {trace.evaluations} proxy evaluations; "
                                  f"the children keep reusing evaluated losses")

    try:
        run_evolution(branches, np.random.default_rng(int(seed)), reject, fp, evaluate,
                      config.evolution(arm), space, on_event=on_event,
                      use_equivalence=arm.equivalence, rungs=rungs)
    except _ComputeSpent:
        trace.stopped_by = "compute"
    trace.wall_seconds = time.perf_counter() - t0
    return trace


class _ComputeSpent(Exception):
    """The arm has spent its compute budget: stop where it is."""


def run_ablation(config: AblationConfig, branches: Mapping[str, BranchKind], proxy: ProxyFn,
                 check: CheckFn, fingerprint: FingerprintFn, *, task: str = "seg",
                 metric: str = "miou", space: SearchSpaceConfig | None = None,
                 settings: Mapping[str, Any] | None = None,
                 on_evaluation: Callable[[ArmTrace], None] | None = None,
                 rung_proxy: RungProxyFn | None = None) -> AblationResult:
    """Every arm of ``config`` with every seed, in one process (seed by seed; within a seed the
    full method first, so the arms that share its draws hit the callers' caches)."""
    result = AblationResult(config, task, metric, settings=dict(settings or {}))
    order = sorted(config.arms, key=lambda a: -ARM_NAMES.index(a))
    for seed in config.seeds:
        for arm in order:
            result.traces.append(run_arm(arm, seed, config, branches, proxy, check,
                                         fingerprint, space, on_evaluation, rung_proxy))
    return result

__all__ = ["ARMS", "ARM_NAMES", "PREVIOUS_ARM", "AblationConfig", "AblationResult", "Arm",
           "ArmTrace", "MeasuredCache", "accept_valid", "get_arm", "run_ablation",
           "run_arm"]
