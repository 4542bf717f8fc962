"""erzy-pipelines: keep an ErzyCall organization's contacts in step with a CRM database.

``ErzyCallContactSync`` (a Dagster Component, for YAML), ``build_sync`` and ``SyncConfig``
(the Python factory) are imported on first use: a normalizing worker process imports this
package too, and must not pay for Dagster.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ErzyCallContactSync", "SyncConfig", "build_sync"]


def __getattr__(name: str) -> Any:
    if name == "ErzyCallContactSync":
        from erzy_pipelines.orchestration.component import ErzyCallContactSync

        return ErzyCallContactSync
    if name in ("SyncConfig", "build_sync"):
        from erzy_pipelines.orchestration import factory

        return getattr(factory, name)
    raise AttributeError(f"module 'erzy_pipelines' has no attribute {name!r}")


def __dir__() -> list[str]:  # so `dg list components` finds the component in this module
    return sorted([*globals(), *__all__])
