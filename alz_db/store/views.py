"""Read-only SQL views for analysis (created by migration ``0002_analysis``; ``v_leaderboard``
    Per search, its best 1,000 evaluated representatives ranked by proxy fitness (``rank`` 1 =
    best; diverged runs, ``fitness`` NULL and ``fitness_kind = 'diverged'``, rank last; ties go
    to the older candidate). Columns: ``search_id, search_name, rank, candidate_id, formula,
    fitness, fitness_kind, generation, mutation, parent_id, fingerprint, evaluated_at``.
    Each search's rows are read from ``ix_candidate_leaderboard`` with a ``LIMIT``, so any
    filter or order on the view stays a small index scan (about a millisecond on a search of a
    million candidates)::

        SELECT rank, candidate_id, fitness, formula FROM v_leaderboard
        WHERE search_id = 1 ORDER BY rank LIMIT 10;

    The best loss of every search::

        SELECT search_name, fitness, formula FROM v_leaderboard WHERE rank = 1;

    Past the first 1,000 (rare: a search evaluates about its proxy budget, 500 by default),
    rank the table itself, which reads the same index::

        SELECT id, fitness, formula FROM candidate
        WHERE search_id = 1 AND status = 'evaluated'
        ORDER BY fitness DESC NULLS LAST, id LIMIT 100 OFFSET 1000;

``v_lineage``
    One row per candidate with its parent edge: ``candidate_id, parent_id, search_id,
    generation, mutation, status, fitness, fitness_kind, equivalent_to_id, formula,
    created_at``. Ancestry of a candidate (root first)::

        WITH RECURSIVE up AS (
            SELECT *, 0 AS depth FROM v_lineage WHERE candidate_id = 1234
            UNION ALL
            SELECT l.*, up.depth + 1 FROM v_lineage l JOIN up ON l.candidate_id = up.parent_id)
        SELECT generation, mutation, fitness, formula FROM up ORDER BY depth DESC;

    Which mutation kinds produce improvements over the parent::

        SELECT c.mutation, count(*) AS children,
               avg((c.fitness > p.fitness)::int) AS improved
        FROM v_lineage c JOIN v_lineage p ON p.candidate_id = c.parent_id
        WHERE c.search_id = 1 AND c.fitness_kind = 'finite' AND p.fitness_kind = 'finite'
        GROUP BY c.mutation ORDER BY improved DESC;

``v_search_progress``
    One row per search: ``search_id, name, task, metric, status, budget,
    evaluations_reserved, evaluations_done, candidates, rejection_checks, rejections,
    rejection_rate, best_fitness, best_candidate_id, created_at, started_at, finished_at``::

        SELECT name, status, evaluations_done || '/' || budget AS progress,
               round(rejection_rate::numeric, 3) AS rejected, best_fitness
        FROM v_search_progress ORDER BY search_id;

Other useful queries straight on the tables::

    -- why graphs were rejected, per search
    SELECT reason, count(*) FROM rejection WHERE search_id = 1 AND verdict = 'reject'
    GROUP BY reason ORDER BY count(*) DESC;

    -- evaluations that needed more than one attempt, with their history
    SELECT e.id, a.attempt, a.worker_id, a.outcome, a.error, a.ended_at - a.started_at AS took
    FROM evaluation e JOIN evaluation_attempt a ON a.evaluation_id = e.id
    WHERE e.attempts > 1 ORDER BY e.id, a.attempt;

    -- how much proxy training the gradient-equivalence check saved
    SELECT count(*) FILTER (WHERE status = 'equivalent') AS reused,
           count(*) FILTER (WHERE status IN ('evaluated', 'pending')) AS trained
    FROM candidate WHERE search_id = 1;
"""

from __future__ import annotations

#: the analysis views, in creation order
VIEWS: tuple[str, ...] = ("v_leaderboard", "v_lineage", "v_search_progress")
