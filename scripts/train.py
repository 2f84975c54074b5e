#!/usr/bin/env python
"""`python scripts/train.py ...` is `mgld train ...` (mgld/cli/train.py).

Kept so that documented commands keep working from a source checkout.
"""

import sys

from mgld.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
