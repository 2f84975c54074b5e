#!/usr/bin/env python
"""`python scripts/bicubic_baseline.py ...` is `mgld bicubic ...` (mgld/cli/bicubic.py).

Kept so that documented commands keep working from a source checkout.
"""

import sys

from mgld.cli import main

if __name__ == "__main__":
    sys.exit(main(["bicubic", *sys.argv[1:]]))
