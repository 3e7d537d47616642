"""Black boxes: functions derivd can only call, never see (CONTRACT §3, issue 5).

A black box is an HTTP endpoint ``POST url {"x": [..]} -> {"y": [..]}``. This
package keeps the registrations (:mod:`.registry`), guards every outbound
connection against SSRF (:mod:`.ssrf`) and turns a batch of points into HTTP
calls for the finite-difference engine (:mod:`.caller`).
"""

from .caller import BlackBoxCaller
from .registry import BlackBoxRegistry, LocalRegistry, MemoryRegistry, RedisRegistry, make_registry
from .spec import BlackBoxSpec
from .ssrf import BlackBoxRefused, Target, check_url

__all__ = [
    "BlackBoxCaller",
    "BlackBoxRefused",
    "BlackBoxRegistry",
    "BlackBoxSpec",
    "LocalRegistry",
    "MemoryRegistry",
    "RedisRegistry",
    "Target",
    "check_url",
    "make_registry",
]
