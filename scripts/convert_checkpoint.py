#!/usr/bin/env python
"""`python scripts/convert_checkpoint.py ...` is `mgld convert ...` (mgld/cli/convert.py).

Kept so that documented commands keep working from a source checkout.
"""

import sys

from mgld.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", *sys.argv[1:]]))
