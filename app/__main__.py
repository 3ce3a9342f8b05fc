"""``python -m app COMMAND``: the same commands as the ``fooling-lab`` console script."""

import sys

from app.cli.main import main

sys.exit(main(prog="python -m app"))
