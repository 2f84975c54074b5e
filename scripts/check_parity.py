#!/usr/bin/env python
"""`python scripts/check_parity.py ...` is `mgld parity ...` (mgld/cli/parity.py).

Kept so that documented commands keep working from a source checkout.
"""

import sys

from mgld.cli import main

if __name__ == "__main__":
    sys.exit(main(["parity", *sys.argv[1:]]))
