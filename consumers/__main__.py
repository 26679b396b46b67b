"""``python -m consumers`` is the ``medocr`` command."""

import sys

from consumers.cli import main

sys.exit(main())
