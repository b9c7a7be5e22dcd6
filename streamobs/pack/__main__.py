"""``python -m streamobs.pack``: the same command as ``streamobs pack``."""

from __future__ import annotations

import sys

from streamobs.pack.command import main

if __name__ == "__main__":
    sys.exit(main())
