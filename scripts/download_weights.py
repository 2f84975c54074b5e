#!/usr/bin/env python
"""`python scripts/download_weights.py ...` is `mgld download ...` (mgld/cli/download.py).

Kept so that documented commands keep working from a source checkout.
"""

import sys

from mgld.cli import main

if __name__ == "__main__":
    sys.exit(main(["download", *sys.argv[1:]]))
