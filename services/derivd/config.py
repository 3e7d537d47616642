"""All settings in one place, read from the environment as ``DERIVD_*``."""

import os
from functools import lru_cache
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> str:
    """The user's data directory for derivd: $XDG_DATA_HOME/derivd, else ~/.local/share/derivd
    (%LOCALAPPDATA%\\derivd on Windows)."""
    base = os.environ.get("XDG_DATA_HOME") or os.environ.get("LOCALAPPDATA") or "~/.local/share"
    return os.path.join(os.path.expanduser(base), "derivd")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DERIVD_", populate_by_name=True)

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 0
    gateways: int = 1  # REST processes on one port (derivd serve --gateways); above 1 share redis_url or data_dir

    # Compile limits (CONTRACT §1): refused with a 4xx naming the limit, before anything runs.
    max_source_bytes: int = 256 * 1024
    max_nesting_depth: int = 100
    max_loop_iterations: int = 50_000
    # A loop whose expansion (iterations x body nodes) is larger stays a loop node (dsl/loops.py).
    loop_unroll_nodes: int = 2_000
    max_graph_nodes: int = 1_000_000
    max_intermediate_bytes: int = 10**8
    max_taylor_order: int = 64
    max_literal_magnitude: float = 1e300
    max_request_bytes: int = 64 * 1024 * 1024

    # Work limits for one request.
    # A dense answer (Jacobian, Hessian) of at most this many entries: 25e6 float64 are 200 MB, and
    # about 500 MB as JSON lists, held at once while the answer is written (5000 x 5000 fits).
    max_jacobian_entries: int = 25 * 10**6
    # Sparsity detection: a pattern (or intermediate) past this many entries is treated as dense.
    max_pattern_nnz: int = 10**7
    # Derivative tensors by Taylor interpolation: binom(n+d-1, d) directions for order d in n variables.
    max_taylor_directions: int = 20_000
    max_tensor_entries: int = 10**7
    forward_chunk_bytes: int = 64 * 1024 * 1024
    request_timeout_s: float = 60.0
    # A program whose one evaluation needs more floating-point operations than this (ir/cost.py: a
    # floor, from its shapes) is refused before it runs (413): 1e13 is minutes of a core's BLAS at
    # ~50 GFLOP/s, far past request_timeout_s; what is under it and still too slow stops at the deadline.
    max_program_flops: float = 1e13

    # What one HTTP connection may cost (gateway/connection.py; Envoy's header limits): header lines and
    # bytes of a request head (431 past them), and time for the head from its first byte and for
    # the body from the head (408).
    http_max_headers: int = 100
    http_max_header_bytes: int = 60 * 1024
    http_header_timeout_s: float = 10.0
    http_body_timeout_s: float = 60.0
    inline_compute_s: float = 0.002  # requests known to take less run on the event loop (no thread hop)
    compute_threads: int = 40  # the dispatcher's threads for every other request, REST and gRPC alike

    # In-process caches, bounded in bytes (and the tape cache in entries too): compiled functions with
    # their tapes (the program text, graph and tape sources), and stored functions (text and constants;
    # without Redis this is the store itself: past it the least recently used are forgotten).
    tape_cache_size: int = 256
    tape_cache_bytes: int = 128 * 1024 * 1024
    function_cache_bytes: int = 128 * 1024 * 1024

    # Tier 2 (compile/xla.py, engines/tiers.py; needs `pip install derivd[xla]`, else off): a tape run
    # xla_after_runs times, or whose runs took xla_after_seconds of compute in all, is compiled by XLA
    # in the background and answers from then on, once its answer at the current point agreed with
    # tier 1's within xla_rtol. xla_tier "auto" does that, "off" never, "always" compiles every tape
    # before its first answer (for testing), waiting at most xla_always_wait_s for it: past that
    # tier 1 answers and the next run after the compile ends checks it. XLA runs on xla_platform
    # ("cpu"; "" lets jax pick an accelerator, e.g. "cuda") with xla_threads CPU threads (0: XLA's
    # default, all cores) and keeps its compiled executables in xla_cache_dir across restarts ("" for none).
    xla_tier: Literal["auto", "always", "off"] = "auto"
    xla_after_runs: int = 20
    xla_after_seconds: float = 0.05
    # ... unless its fastest tier-1 run took under xla_min_run_s: a call of an XLA executable costs about that
    # (Rosenbrock's gradient, tier 2 against tier 1: n = 10 12 us vs 9, n = 1e3 12 vs 12, n = 1e4 25 vs 27),
    # so such a tape is never compiled (result "small").
    xla_min_run_s: float = 20e-6
    xla_rtol: float = 1e-9
    xla_platform: str = "cpu"
    xla_threads: int = 1
    xla_cache_dir: str = "~/.cache/derivd/xla"
    xla_always_wait_s: float = 5.0
    # After tier 2 took over a tape, tier 1 reruns (in the compile thread) the points of its first answers
    # and of every xla_audit_every-th, dropping tier 2 at a disagreement (engines/tiers.py); 0: only the first.
    xla_audit_every: int = 100

    # Without Redis, stored functions and black boxes are kept in SQLite under data_dir (cache/local_store.py)
    # across restarts and shared by the gateway processes of one machine; "none" (or "") keeps them in
    # memory only. The store holds at most data_max_bytes of entries: past it the least recently used go.
    data_dir: str = Field(default_factory=default_data_dir)
    data_max_bytes: int = 1024 * 1024 * 1024

    # Tape cache in Redis (redis_url, below): entries are signed with HMAC-SHA256 under this key
    # (the same on every gateway and worker); without it nothing is shared. Short timeouts: a slow
    # or absent Redis is skipped and retried after a backoff that doubles up to its max.
    tape_cache_hmac_key: SecretStr | None = None
    redis_key_prefix: str = "derivd"
    redis_socket_timeout_s: float = 0.05
    redis_connect_timeout_s: float = 0.05
    redis_retry_backoff_s: float = 0.5
    redis_retry_backoff_max_s: float = 5.0
    tape_ttl_s: int = 7 * 24 * 3600
    function_ttl_s: int = 30 * 24 * 3600
    tape_cache_max_entry_bytes: int = 32 * 1024 * 1024

    # Worker pools: gRPC targets per engine family (e.g. dns:///workers-forward:50052), else
    # pool_default, else in process. `derivd serve --workers N` sets pool_default to its local workers.
    pool_default: str | None = None
    pool_forward: str | None = None
    pool_reverse: str | None = None
    pool_taylor: str | None = None
    pool_finite: str | None = None
    # The shared secret a gateway sends its workers (gRPC metadata) and a worker requires of every call
    # but health checks: required by `derivd worker`; `derivd serve --workers N` makes one per run.
    worker_token: SecretStr | None = None
    worker_threads: int = 4
    worker_stop_grace_s: float = 1.0  # past its deadline plus this, a busy worker exits and is replaced
    worker_max_message_bytes: int = 256 * 1024 * 1024
    pool_wait_s: float = 5.0  # how long a request waits for a worker of a pool with none connected

    # Public gRPC beside REST (0 = off); message limits raised on both ends past
    # gRPC's 4 MiB default to what a REST body may carry.
    grpc_port: int = 50051
    grpc_threads: int = 16
    grpc_max_message_bytes: int = 64 * 1024 * 1024 + 64 * 1024
    # The session socket beside gRPC (grpc_api/session_socket.py: the Session without HTTP/2): its port
    # on the same host, 0 for any free one (clients learn it from the Transports method), -1 for off.
    session_socket_port: int = 0

    # Operations. api_keys empty = open; e.g. DERIVD_API_KEYS='["k1","k2"]'.
    # rate_limit_requests per rate_limit_window_s per key (0 = no limit), in Redis when redis_url is set.
    api_keys: list[str] = []
    rate_limit_requests: int = 0
    rate_limit_window_s: float = 60.0
    # With api_keys set: past this many failed authentications per window, a client address is
    # refused (429) until the window ends, whatever key it sends (0 = no limit).
    auth_failures_max: int = 10
    auth_failures_window_s: float = 60.0
    log_format: str = "auto"  # json, text (lines for people), auto: text on a terminal, else json
    log_level: str = "INFO"

    # Finite differences: evaluations one request may spend (points of f).
    fd_max_evaluations: int = 200_000

    # Black boxes. The allow-list is CIDR ranges a black box's resolved address
    # must fall in; the deny-list wins over it. Defaults: public addresses only.
    # DERIVD_REDIS_URL, or the conventional REDIS_URL.
    redis_url: str | None = Field(None, validation_alias=AliasChoices("DERIVD_REDIS_URL", "REDIS_URL"))
    blackbox_allow: list[str] = ["0.0.0.0/0", "::/0"]
    blackbox_deny: list[str] = [
        "127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
        "169.254.0.0/16", "fe80::/10", "fc00::/7", "100.64.0.0/10", "0.0.0.0/8",
        "224.0.0.0/4", "ff00::/8", "::ffff:0:0/96", "::/128", "64:ff9b::/96", "64:ff9b:1::/48", "2002::/16",
    ]
    blackbox_max_batch_points: int = 1000
    blackbox_max_response_bytes: int = 16 * 1024 * 1024
    blackbox_retries: int = 3
    blackbox_backoff_s: float = 0.05
    blackbox_default_max_concurrency: int = 16

    @property
    def data_path(self) -> str | None:
        """``data_dir`` with ~ expanded, or None when it is off ("none" or "")."""
        value = self.data_dir.strip()
        return None if value.lower() in ("", "none") else os.path.abspath(os.path.expanduser(value))


# Values that only ever stood in for a secret (docs, old manifests): a server refuses to start with one.
PLACEHOLDER_SECRETS = {"change-me-in-production", "change-me", "changeme", "replace-me", "secret", "placeholder"}


def placeholder_secrets(settings: Settings) -> list[str]:
    """The DERIVD_* names of secrets set to a placeholder (``derivd serve`` and ``worker`` refuse them)."""
    found = []
    for name in ("tape_cache_hmac_key", "worker_token"):
        value = getattr(settings, name)
        if value is not None and value.get_secret_value().strip().lower() in PLACEHOLDER_SECRETS:
            found.append(f"DERIVD_{name.upper()}")
    return found


@lru_cache
def get_settings() -> Settings:
    return Settings()
