"""The tape cache: compiled functions in process, their graphs (and stored programs) in Redis."""

from derivd.cache.functions import FunctionStore  # noqa: F401
from derivd.cache.keys import TapeKey  # noqa: F401
from derivd.cache.redis_tier import RedisTier  # noqa: F401
from derivd.cache.tape_cache import CacheStats, TapeCache  # noqa: F401
