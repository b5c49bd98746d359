"""`python -m tesla_smart_charger` runs the same command line as the console script."""

import sys

from tesla_smart_charger.cli.main import main

sys.exit(main())
