"""``python -m unfreeze.cli``: the ``unfreeze`` command (as stages and tests run it)."""

import sys

from unfreeze.cli import main

sys.exit(main())
