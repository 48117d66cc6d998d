"""``python -m devstack.demo``: the same as ``python -m events dev``."""

import sys

from devstack.demo import main

sys.exit(main(sys.argv[1:]))
