"""Fixtures every test folder may use, from the modules of ``tests/fixtures`` (plugins, so no
test imports a conftest): the PostgreSQL server and databases (:mod:`tests.fixtures.postgres`)
and the web app's populated database (:mod:`tests.fixtures.world`). Helpers that are not
fixtures: :mod:`tests.fixtures.helpers`, :mod:`tests.fixtures.builders`."""

pytest_plugins = ["tests.fixtures.postgres", "tests.fixtures.world"]
