#!/usr/bin/env python
"""`python scripts/generate_latents.py ...` is `mgld generate-latents ...` (mgld/cli/generate_latents.py).

Kept so that documented commands keep working from a source checkout.
"""

import sys

from mgld.cli import main

if __name__ == "__main__":
    sys.exit(main(["generate-latents", *sys.argv[1:]]))
