#!/usr/bin/env python
"""`python scripts/infer.py ...` is `mgld infer ...` (mgld/cli/infer.py).

Kept so that documented commands keep working from a source checkout.
"""

import sys

from mgld.cli import main

if __name__ == "__main__":
    sys.exit(main(["infer", *sys.argv[1:]]))
