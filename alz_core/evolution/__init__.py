"""The search: :mod:`.candidate` (candidates, members of the population), :mod:`.mutation`,
:mod:`.regularized` (regularised evolution), :mod:`.rungs` (multi-fidelity promotion),
:mod:`.ablation` (the search-efficiency study; its figure and table: :mod:`.ablation_report`).

The names of the former module ``alz_core.evolution`` are re-exported here.
"""

from .candidate import Candidate, Individual
from .regularized import (
    Attempts,
    RejectFn,
    RejectManyFn,
    SearchEvent,
    SearchExhausted,
    child_candidate,
    initial_candidate,
    run_evolution,
    tournament_select,
)

__all__ = [
    "Attempts", "Candidate", "Individual", "RejectFn", "RejectManyFn", "SearchEvent",
    "SearchExhausted", "child_candidate", "initial_candidate", "run_evolution",
    "tournament_select",
]
