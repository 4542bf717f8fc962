"""The run launcher's public path, named in users' ``dagster.yaml`` (``run_launcher.module``).

Kept at this address so existing instances keep loading; the class lives in
``erzy_pipelines.orchestration.launcher``.
"""

from erzy_pipelines.orchestration.launcher import LocalProcessRunLauncher

__all__ = ["LocalProcessRunLauncher"]
