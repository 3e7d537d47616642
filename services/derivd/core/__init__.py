"""The core: a request in, a response out, whatever the skin or the process.

``Service`` (``service``) holds the function store, the black boxes and the
tape cache, and computes an endpoint of a ``Request`` in this process. Around
it: the request type (``request``), its schemas (``schemas``), the endpoint
table (``endpoints``), the one place a request is checked (``prepare``), the
endpoints by AD (``derivatives``) and by Taylor series (``taylor_mode``), black
boxes (``blackboxes``), stored functions (``functions``) and HVP streams
(``streams``). Which process or thread runs a request is the dispatcher's
business (``derivd.dispatch``), above this package.
"""

from derivd.core.endpoints import ENDPOINTS, Endpoint, endpoint  # noqa: F401
from derivd.core.functions import StoredFunction, describe  # noqa: F401
from derivd.core.request import Request, Timings  # noqa: F401
from derivd.core.service import Service  # noqa: F401
