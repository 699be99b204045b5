"""``python -m dnas.cli``: the ``dnas`` command."""

import sys

from dnas.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
