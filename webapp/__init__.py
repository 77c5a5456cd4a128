"""The Streamlit web app of AutoLoss-Zero: searches, population, candidates, lineage,
discovered formulas and comparisons (``alz ui``; entry point ``webapp/app.py``).

It reads through :mod:`alz_db` only (:mod:`alz_db.queries`), on a read-only database role.
"""
