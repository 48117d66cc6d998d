"""``python -m events <command>``: see ``events.hosts.cli``."""

import sys

from events.hosts.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
