"""A local, standalone fake of the ErzyCall Contacts API for tests and demos (stdlib only).

    from erzy_pipelines.sandbox import SandboxServer, SandboxConfig, DEMO_API_KEY
    srv = SandboxServer(SandboxConfig(port=0)).start()
    srv.base_url  # "http://127.0.0.1:PORT/api/v1"; send X-API-Key: DEMO_API_KEY
    srv.stop()

Behaviour follows the published Contacts reference; every point the docs leave open is decided
and documented in the module that implements it (app, store, validation, ratelimit, faults).
"""

from .app import RequestRecord
from .config import (
    DEMO_API_KEY,
    DEMO_GROUPS,
    KeySpec,
    SandboxConfig,
    key_hash,
)
from .faults import Faults
from .server import SandboxServer, serve_forever

__all__ = [
    "DEMO_API_KEY",
    "DEMO_GROUPS",
    "Faults",
    "KeySpec",
    "RequestRecord",
    "SandboxConfig",
    "SandboxServer",
    "key_hash",
    "serve_forever",
]
