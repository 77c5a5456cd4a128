"""Read models shared by the CLI, the web app and the report: what one screen shows, read in
one transaction, as frozen records.

* :mod:`.overview`: the searches (overviews, fitness histories, workers, noise floor) and the
  web app's read-only engine;
* :mod:`.population`: the paginated, sorted and filtered population table;
* :mod:`.candidate`: one candidate (details, lineage graph, tuning studies, config snippet);
* :mod:`.report_data`: what ``alz report`` shows.

They read through the repositories and the store, never ``services`` or ``cli``; the web app
imports these (and ``alz_db``'s public names) only. Every public name is importable from
``alz_db.queries``.
"""

from ..repo.lineage import rung_counts
from ..repo.workers import WORKER_SILENT_SECONDS
from .candidate import (
    CandidateDetail,
    LineageGraph,
    RejectionRecord,
    TuningView,
    candidate_detail,
    descendants,
    lineage_graph,
    mm_snippet,
    proxy_metrics,
    tuning_view,
)
from .overview import (
    FitnessPoint,
    SearchOverview,
    fitness_history,
    make_read_only_engine,
    search_noise_floor,
    search_overview,
    search_overviews,
    search_workers,
)
from .population import (
    MAX_PAGE_SIZE,
    REJECTED,
    PopulationPage,
    PopulationQuery,
    PopulationRow,
    SortKey,
    population_page,
)
from .report_data import ReportData, collect_report

__all__ = [
    "MAX_PAGE_SIZE", "REJECTED", "WORKER_SILENT_SECONDS", "CandidateDetail", "FitnessPoint",
    "LineageGraph", "PopulationPage", "PopulationQuery", "PopulationRow", "RejectionRecord",
    "ReportData", "SearchOverview", "SortKey", "TuningView", "candidate_detail",
    "collect_report", "descendants", "fitness_history", "lineage_graph", "make_read_only_engine",
    "mm_snippet", "population_page", "proxy_metrics", "rung_counts", "search_noise_floor",
    "search_overview", "search_overviews", "search_workers", "tuning_view",
]
