"""Where the data lives: the schema (:mod:`.models`, created only by the Alembic migrations in
``migrations/``, applied by :mod:`.migrate`), the engines and units of work (:mod:`.engine`,
:mod:`.embedded`, :mod:`.retry`), the stored-fitness encoding (:mod:`.fitness`), the analysis
views and the read-only role (:mod:`.views`, :mod:`.roles`), LISTEN/NOTIFY (:mod:`.notify`) and
the request ledger that makes retried writes idempotent (:mod:`.requests`).

Imports nothing of ``alz_db``'s other sub-packages (``repo``, ``queries``, ``services``,
``cli``): ``tests/test_layers.py``."""
