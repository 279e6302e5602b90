"""`python -m alertd` runs the command line."""

import sys

from alertd.cli import main

sys.exit(main())
