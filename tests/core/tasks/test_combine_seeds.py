"""A candidate trained with several seeds: one fitness, every seed kept."""

from __future__ import annotations

import pytest

from alz_core.tasks.base import ProxyResult, combine_seeds


def _run(fitness, diverged=False, losses=(1.0, 0.5)):
    metrics = {} if diverged else {"miou": fitness, "gacc": fitness + 0.1}
    return ProxyResult(metrics, None if diverged else fitness, losses, 2.0, len(losses),
                       diverged)


def test_the_fitness_is_the_mean_and_each_seed_is_kept() -> None:
    r = combine_seeds([(3, _run(0.5, losses=(2.0, 1.0))), (4, _run(0.7))], "miou")
    assert r.fitness == pytest.approx(0.6) and not r.diverged
    assert r.metrics["miou"] == pytest.approx(0.6) and r.metrics["gacc"] == pytest.approx(0.7)
    assert r.metrics["fitness_std"] == pytest.approx(0.1414213, rel=1e-5)
    assert [s["seed"] for s in r.metrics["seeds"]] == [3, 4]
    assert r.metrics["seeds"][1]["metrics"]["miou"] == 0.7
    assert r.losses == (2.0, 1.0) and r.seconds == 4.0  # the first seed's curve, all the time


def test_a_diverged_seed_counts_as_zero_and_all_diverged_is_diverged() -> None:
    r = combine_seeds([(0, _run(0.6)), (1, _run(None, diverged=True))], "miou")
    assert r.fitness == pytest.approx(0.3) and not r.diverged
    assert r.metrics["seeds"][1] == {"seed": 1, "fitness": None, "diverged": True,
                                     "iterations": 2, "seconds": 2.0, "metrics": {}}
    r = combine_seeds([(0, _run(None, True)), (1, _run(None, True))], "miou")
    assert r.diverged and r.fitness is None and "miou" not in r.metrics
    with pytest.raises(ValueError):
        combine_seeds([], "miou")
