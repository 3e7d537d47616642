"""The tape cache: compiled functions in process, their graphs (and stored programs) in Redis; stored
programs and black boxes without Redis in the data directory (``local_store``)."""

from derivd.cache.functions import FunctionStore  # noqa: F401
from derivd.cache.keys import TapeKey  # noqa: F401
from derivd.cache.local_store import LocalStore, StoreUnavailable  # noqa: F401
from derivd.cache.redis_tier import RedisTier  # noqa: F401
from derivd.cache.tape_cache import CacheStats, TapeCache  # noqa: F401
