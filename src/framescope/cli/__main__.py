"""``python -m framescope.cli …``: the ``framescope`` command."""

import sys

from framescope.cli import main

sys.exit(main())
