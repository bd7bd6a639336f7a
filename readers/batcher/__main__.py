"""``python -m readers.batcher``: :func:`readers.batcher.cli.main`."""

import sys

from readers.batcher.cli import main

sys.exit(main())
