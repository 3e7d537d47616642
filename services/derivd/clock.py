"""The clock deadlines and backoffs read: ``clock.now()``, seconds on ``time.monotonic``'s scale
(the scale on which the skins stamp a request's deadline).

Request deadlines (``engines.common.check_deadline``), the black-box caller's time left before a
retry, and the Redis breaker's backoff read it through this module (``clock.now()``, never a
``from`` import), so a test makes time pass by replacing ``clock.now`` instead of sleeping or
relying on how fast the machine is. Only code in the process can change it; no request can.
"""

import time

now = time.monotonic
