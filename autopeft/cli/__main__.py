"""``python -m autopeft.cli`` is the ``autopeft`` command."""

import sys

from autopeft.cli import main

sys.exit(main())
