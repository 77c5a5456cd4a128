"""Storage and coordination of searches in PostgreSQL (the worker protocol: docs/store.md).

This module is the public API: every name below is importable from ``alz_db``. The package's
layers, each importing only those below it (``tests/test_layers.py``):

* :mod:`alz_db.cli`: the ``alz`` and ``alz-worker`` command lines;
* :mod:`alz_db.services`: work spanning many units of work (the search worker, re-training,
  tuning, noise floors, distributed runs, the HTML report);
* :mod:`alz_db.queries`: read models of the web app, the CLI and the report;
* :mod:`alz_db.repo`: repositories, functions of a Session that never commit and return frozen
  records or ``alz_core`` dataclasses (searches, candidates, the queue, workers, experiments,
  lineage, retention, tuning studies);
* :mod:`alz_db.store`: the schema (:mod:`alz_db.store.models`, created only by the Alembic
  migrations, :mod:`alz_db.store.migrate`), where the database is and units of work
  (:mod:`alz_db.store.engine`, :mod:`alz_db.store.embedded`, :mod:`alz_db.store.retry`), the
  analysis views and the read-only role (:mod:`alz_db.store.views`, :mod:`alz_db.store.roles`);

and the vocabulary every layer uses: :mod:`alz_db.records`, :mod:`alz_db.enums`,
:mod:`alz_db.errors`.

A unit of work::

    engine = make_engine(resolve_database_url())
    sessions = make_session_factory(engine)
    with session_scope(sessions) as s:
        search = create_search(s, "seg-miou", "seg", "miou", evolution={"budget": 12})
    lease = run_in_transaction(sessions, claim_evaluation, worker_id)
"""

from .enums import (
    AttemptOutcome,
    CandidateStatus,
    EvalKind,
    EvalStatus,
    FinishOutcome,
    FitnessKind,
    SearchStatus,
    SubmitOutcome,
    WorkerStatus,
)
from .errors import (
    AlreadyExists,
    DatabaseUnavailable,
    DuplicateRepresentative,
    IntegrityViolation,
    InvalidInput,
    NotFound,
    PermissionDenied,
    StatementTimeout,
    StoreError,
    TransientStoreError,
)
from .records import (
    AttemptRecord,
    CandidateRecord,
    EvaluationRecord,
    LeaderboardEntry,
    Lease,
    LineageEntry,
    PopulationEntry,
    ReapedEvaluation,
    Representative,
    SearchInfo,
    Submission,
    WorkerProblemRecord,
    WorkerRecord,
)
from .repo.candidates import (
    add_candidate,
    candidate_hash,
    candidates_of,
    find_representative,
    get_candidate,
    load_candidates,
    population_entries,
    queue_evaluation,
    read_population,
    record_rejections,
    release_proxy_slot,
    reserve_proxy_slot,
    submit_candidate,
)
from .repo.lineage import children, leaderboard, lineage
from .repo.queue import (
    claim_evaluation,
    evaluation_attempts,
    evaluation_steps,
    evaluations_of,
    fail_evaluation,
    finish_evaluation,
    get_evaluation,
    heartbeat,
    reap_expired_leases,
    record_steps,
    release_evaluation,
)
from .repo.retention import prune_rejections
from .repo.searches import (
    create_search,
    fail_search,
    finish_search_if_complete,
    get_search,
    list_searches,
    start_search,
    stop_search,
    validate_search,
)
from .repo.workers import (
    get_worker,
    list_workers,
    mark_lost_workers,
    record_worker_problem,
    register_worker,
    resolve_worker_problem,
    revive_worker,
    stop_worker,
    worker_heartbeat,
    worker_problems,
)
from .store.embedded import EmbeddedServer, release_embedded, start_embedded, stop_embedded
from .store.engine import (
    DATABASE_URL_ENV,
    check_database,
    display_url,
    make_engine,
    make_session_factory,
    normalize_url,
    resolve_database_url,
    session_scope,
)
from .store.retry import DEFAULT_RETRY, NO_RETRY, RetryPolicy, run_in_transaction
from .store.roles import create_read_only_role, drop_role

__all__ = [
    "DATABASE_URL_ENV", "DEFAULT_RETRY", "NO_RETRY", "AlreadyExists", "AttemptOutcome",
    "AttemptRecord", "CandidateRecord", "CandidateStatus", "DatabaseUnavailable",
    "DuplicateRepresentative", "EmbeddedServer", "EvalKind", "EvalStatus", "EvaluationRecord",
    "FinishOutcome", "FitnessKind", "IntegrityViolation", "InvalidInput", "LeaderboardEntry",
    "Lease", "LineageEntry", "NotFound", "PermissionDenied", "PopulationEntry",
    "ReapedEvaluation",
    "Representative", "RetryPolicy", "SearchInfo", "SearchStatus", "StatementTimeout",
    "StoreError", "Submission", "SubmitOutcome", "TransientStoreError", "WorkerProblemRecord",
    "WorkerRecord",
    "WorkerStatus", "add_candidate", "candidate_hash", "candidates_of", "check_database",
    "children", "claim_evaluation", "create_read_only_role", "create_search", "display_url",
    "drop_role", "evaluation_attempts", "evaluation_steps", "evaluations_of", "fail_evaluation",
    "fail_search", "find_representative", "finish_evaluation", "finish_search_if_complete",
    "get_candidate", "get_evaluation", "get_search", "get_worker", "heartbeat", "leaderboard",
    "lineage", "list_searches", "list_workers", "make_engine", "make_session_factory",
    "mark_lost_workers", "normalize_url", "prune_rejections", "queue_evaluation",
    "load_candidates", "population_entries", "read_population",
    "reap_expired_leases", "record_rejections", "record_steps", "register_worker",
    "release_embedded", "release_evaluation", "release_proxy_slot", "reserve_proxy_slot",
    "resolve_database_url",
    "run_in_transaction", "session_scope", "start_embedded", "start_search", "stop_embedded",
    "revive_worker", "stop_search", "stop_worker", "submit_candidate", "validate_search",
    "worker_heartbeat",
    "record_worker_problem", "resolve_worker_problem", "worker_problems",
]
