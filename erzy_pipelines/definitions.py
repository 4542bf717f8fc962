"""The code location's public module path (``workspace.yaml``, ``dg``, ``dagster dev -m``).

Kept at this address so users' workspace files keep working; the objects live in
``erzy_pipelines.orchestration.definitions``.
"""

from erzy_pipelines.orchestration.definitions import *  # noqa: F403
from erzy_pipelines.orchestration.definitions import defs  # noqa: F401
