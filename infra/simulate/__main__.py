"""``python -m infra.simulate``: :func:`infra.simulate.cli.main`."""

import sys

from infra.simulate.cli import main

sys.exit(main())
