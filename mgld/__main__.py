"""``python -m mgld``: the ``mgld`` command (:mod:`mgld.cli`)."""

import sys

from mgld.cli import main

sys.exit(main())
