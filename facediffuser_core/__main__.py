"""``python -m facediffuser_core``: the same as the ``facediffuser`` command."""

import sys

from .cli import main

sys.exit(main())
