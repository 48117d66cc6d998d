"""``python -m devstack.servicebus [--port P] [--topology FILE]``."""

from __future__ import annotations

import sys

from .cli import main

raise SystemExit(main(sys.argv[1:]))
