"""``python -m endoedge.cli``."""

import sys

from endoedge.cli import main

sys.exit(main())
