"""`python -m benchmarks [--goals] ...`: the same as `python -m benchmarks.compare_builds ...`."""

from __future__ import annotations

import sys

from benchmarks.compare_builds import main

if __name__ == "__main__":
    sys.exit(main())
