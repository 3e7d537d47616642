"""``python -m derivd_client``: the SDK's verbs, as ``derivd-client`` runs them (``derivd`` also
dispatches the server's verbs when it is installed)."""

import sys

from .cli import main

sys.exit(main())
