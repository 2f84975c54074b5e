"""``python -m mgld``: the ``mgld`` command (:mod:`mgld.cli`)."""

import sys

from mgld.cli import main

if __name__ == "__main__":
    sys.exit(main())
