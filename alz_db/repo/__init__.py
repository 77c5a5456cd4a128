"""Repositories: functions of a SQLAlchemy ``Session`` that never commit and return frozen
records (:mod:`alz_db.records`) or ``alz_core`` dataclasses: searches, candidates, the
evaluation queue, workers, experiments, lineage and leaderboards, retention, tuning studies.

They import the store and each other, never ``queries``, ``services`` or ``cli``."""
