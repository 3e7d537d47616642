"""``python -m derivd_client``: the ``derivd`` command line."""

import sys

from .cli import main

sys.exit(main())
