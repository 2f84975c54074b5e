#!/usr/bin/env python
"""`python scripts/make_testset.py ...` is `mgld make-testset ...` (mgld/cli/make_testset.py).

Kept so that documented commands keep working from a source checkout.
"""

import sys

from mgld.cli import main

if __name__ == "__main__":
    sys.exit(main(["make-testset", *sys.argv[1:]]))
