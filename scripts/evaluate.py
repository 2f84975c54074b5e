#!/usr/bin/env python
"""`python scripts/evaluate.py ...` is `mgld evaluate ...` (mgld/cli/evaluate.py).

Kept so that documented commands keep working from a source checkout.
"""

import sys

from mgld.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
