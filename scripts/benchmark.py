#!/usr/bin/env python
"""`python scripts/benchmark.py ...` is `mgld benchmark ...` (mgld/cli/benchmark.py).

Kept so that documented commands keep working from a source checkout.
"""

import sys

from mgld.cli import main

if __name__ == "__main__":
    sys.exit(main(["benchmark", *sys.argv[1:]]))
