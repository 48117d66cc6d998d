"""Run every benchmark: each ``bench/<area>_<what>.py`` module's ``main()``, in name order."""

from __future__ import annotations

import importlib
from pathlib import Path


def main() -> None:
    for path in sorted(Path(__file__).parent.glob("*_*.py")):
        if path.name.startswith("__"):
            continue
        importlib.import_module(f"bench.{path.stem}").main()


if __name__ == "__main__":
    main()
