"""``python -m pyro_ebm``: the command line."""

import sys

from .cli import main

sys.exit(main())
