"""``python -m fbnas`` runs the command line."""

import sys

from fbnas.cli.main import main

sys.exit(main())
