"""``python -m alz_db.cli``: the ``alz`` command (as ``python -m alz_db.cli`` ran it before the
CLI became a package)."""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
