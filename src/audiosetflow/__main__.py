"""``python -m audiosetflow``: the ``audiosetflow`` command."""

import sys

from .cli import main

sys.exit(main())
