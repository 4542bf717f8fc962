"""The Dagster instance a CLI run uses: $DAGSTER_HOME, given the package's ``dagster.yaml``."""

from __future__ import annotations

import os
from pathlib import Path

from erzy_pipelines.settings import PACKAGE_DIR, data_dir

INSTANCE_TEMPLATE = PACKAGE_DIR / "dagster.yaml"
#: First lines of the instance settings this package wrote (this version's, and earlier ones'):
#: a $DAGSTER_HOME/dagster.yaml starting with one of them is kept equal to the template.
MANAGED_FIRST_LINES = (
    INSTANCE_TEMPLATE.read_text().splitlines()[0],
    "# Local Dagster instance settings. `erzy-pipelines sync|demo|dev` copy this file into",
)


def ensure_dagster_home() -> Path:
    """Use $DAGSTER_HOME, or data/dagster_home; give it the package's dagster.yaml.

    The file comes from the installed package (not a checkout), so the pools, run retries and
    run monitoring apply wherever the package is installed. A file the user manages (its first
    line is not ours) is left alone.
    """
    if os.environ.get("DAGSTER_HOME"):
        home = Path(os.environ["DAGSTER_HOME"])
    else:
        home = data_dir() / "dagster_home"
        os.environ["DAGSTER_HOME"] = str(home)
    home.mkdir(parents=True, exist_ok=True)
    target, template = home / "dagster.yaml", INSTANCE_TEMPLATE.read_text()
    current = target.read_text() if target.exists() else None
    first_line = current.splitlines()[0] if current else ""
    managed = current is None or first_line in MANAGED_FIRST_LINES
    if managed and current != template:
        target.write_text(template)
    return home
