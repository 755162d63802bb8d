"""``python -m prokd.cli``: the ``prokd`` command."""

import sys

from prokd.cli import main

sys.exit(main())
