"""``python -m jaxtd``: the ``jaxtd`` command (see :mod:`jaxtd.cli`)."""

import sys

from jaxtd.cli import main

if __name__ == "__main__":
    sys.exit(main())
