"""Typed, frozen, validated configs: the paper's defaults and errors that name field and value."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest

from alz_core.config import (
    ConfigError,
    EvolutionConfig,
    MutationWeights,
    RejectionConfig,
    ScoreMode,
    SearchSpaceConfig,
    config_to_dict,
)
from alz_core.graph.ops import OP_NAMES


def test_defaults_are_the_seed_values() -> None:
    s = SearchSpaceConfig()
    assert (s.init_depth, s.ops, s.constants) == (3, OP_NAMES, (1.0,))
    e = EvolutionConfig()
    assert (e.initial_population, e.population_size, e.tournament_fraction, e.budget) == (
        20, 2500, 0.05, 500)
    assert e.mutation_weights == MutationWeights(1.0, 1.0, 1.0, 1.0)
    r = RejectionConfig()
    assert (r.num_samples, r.iterations, r.lr, r.momentum, r.threshold) == (5, 500, 1e-3, 0.9,
                                                                           0.6)
    assert r.score_mode is ScoreMode.ABSOLUTE
    assert r.init_std == 0.01


@pytest.mark.parametrize(("cls", "kwargs", "shown"), [
    (SearchSpaceConfig, {"init_depth": 0}, "init_depth=0"),
    (SearchSpaceConfig, {"init_depth": 7}, "init_depth=7"),
    (SearchSpaceConfig, {"init_depth": 2.5}, "init_depth=2.5"),
    (SearchSpaceConfig, {"max_depth": 2}, "max_depth=2"),
    (SearchSpaceConfig, {"max_size": 6}, "max_size=6"),
    (SearchSpaceConfig, {"max_size": 24.5}, "max_size=24.5"),
    (SearchSpaceConfig, {"ops": ("add", "frob")}, "ops=['frob']"),
    (SearchSpaceConfig, {"ops": ()}, "ops=()"),
    (SearchSpaceConfig, {"ops": ("add", "add")}, "ops=('add', 'add')"),
    (SearchSpaceConfig, {"ops": ("neg", "log")}, "ops=('neg', 'log')"),
    (MutationWeights, {"insert": -1}, "mutation_weights.insert=-1"),
    (MutationWeights, {"delete": float("nan")}, "mutation_weights.delete=nan"),
    (MutationWeights, {"insert": 0, "delete": 0, "replace": 0, "reinit": 0},
     "mutation_weights={"),
    (EvolutionConfig, {"initial_population": 0}, "initial_population=0"),
    (EvolutionConfig, {"population_size": 10}, "population_size=10"),
    (EvolutionConfig, {"tournament_fraction": 0}, "tournament_fraction=0"),
    (EvolutionConfig, {"tournament_fraction": 1.5}, "tournament_fraction=1.5"),
    (EvolutionConfig, {"budget": 0}, "budget=0"),
    (EvolutionConfig, {"budget": 10.5}, "budget=10.5"),
    (EvolutionConfig, {"max_mutation_tries": 0}, "max_mutation_tries=0"),
    (EvolutionConfig, {"mutation_weights": {"reinit": -2}}, "mutation_weights.reinit=-2"),
    (RejectionConfig, {"num_samples": 0}, "num_samples=0"),
    (RejectionConfig, {"iterations": 0}, "iterations=0"),
    (RejectionConfig, {"iterations": 2.5}, "iterations=2.5"),
    (RejectionConfig, {"iterations": True}, "iterations=True"),
    (RejectionConfig, {"lr": 0.0}, "lr=0.0"),
    (RejectionConfig, {"lr": float("nan")}, "lr=nan"),
    (RejectionConfig, {"momentum": 1.0}, "momentum=1.0"),
    (RejectionConfig, {"momentum": -0.1}, "momentum=-0.1"),
    (RejectionConfig, {"threshold": 1.5}, "threshold=1.5"),
    (RejectionConfig, {"init_std": 0}, "init_std=0"),
    (RejectionConfig, {"fingerprint_digits": 1}, "fingerprint_digits=1"),
    (RejectionConfig, {"fingerprint_digits": 13}, "fingerprint_digits=13"),
    (RejectionConfig, {"score_mode": "bogus"}, "score_mode='bogus'"),
])
def test_errors_name_the_field_and_the_value(cls, kwargs: dict, shown: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(shown)) as info:
        cls(**kwargs)
    assert "expected" in str(info.value)


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


def test_numpy_integers_are_integers() -> None:
    assert SearchSpaceConfig(init_depth=np.int64(2)).init_depth == 2
    assert RejectionConfig(iterations=np.int32(10)).iterations == 10


def test_coercions() -> None:
    assert RejectionConfig(score_mode="gain").score_mode is ScoreMode.GAIN
    assert EvolutionConfig(mutation_weights={"insert": 2.0}).mutation_weights == MutationWeights(
        insert=2.0)
    s = SearchSpaceConfig(ops=["add", "log"], constants=[1, 2])
    assert s.ops == ("add", "log") and s.constants == (1.0, 2.0)
    hash(s)  # hashable once lists are turned into tuples


@pytest.mark.parametrize("cfg", [SearchSpaceConfig(), EvolutionConfig(), RejectionConfig(),
                                 MutationWeights()])
def test_configs_are_frozen(cfg) -> None:
    name = dataclasses.fields(cfg)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(cfg, name, 1)


@pytest.mark.parametrize("cfg", [
    SearchSpaceConfig(init_depth=2, ops=("add", "mul", "log")),
    EvolutionConfig(budget=7, mutation_weights=MutationWeights(insert=0.5)),
    RejectionConfig(score_mode=ScoreMode.GAIN, threshold=0.1),
])
def test_config_to_dict_is_json_and_round_trips(cfg) -> None:
    d = config_to_dict(cfg)
    back = json.loads(json.dumps(d))
    assert back == d
    assert type(cfg)(**back) == cfg
    if isinstance(cfg, RejectionConfig):
        assert d["score_mode"] == "gain"
