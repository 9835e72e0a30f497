"""``python -m gossipml``: the same as the ``gossipml`` console script."""

import sys

from gossipml.cli import main

sys.exit(main())
