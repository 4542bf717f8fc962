"""An IO manager that stores one pickle per (asset, set of partitions).

Dagster's filesystem IO manager refuses an output that covers several partitions, which is what
a single-run backfill of many contact groups (and the daily all-groups run) produces. Here the
file is named after the sorted partition keys, so the steps of one run find each other's output,
and runs of different groups never overwrite each other's.
"""

import hashlib
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import dagster as dg


def _scope(keys: list[str]) -> str:
    if not keys:
        return "unpartitioned"
    digest = hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:16]
    return f"{len(keys)}-{digest}"


class PartitionSetPickleIOManager(dg.ConfigurableIOManager):
    """Pickles asset outputs under ``base_dir/<asset>/<partition-set>.pkl`` (atomic writes)."""

    base_dir: str

    def _path(self, context: dg.OutputContext | dg.InputContext) -> Path:
        keys = list(context.asset_partition_keys) if context.has_asset_partitions else []
        return Path(self.base_dir, *context.asset_key.path, f"{_scope(keys)}.pkl")

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        path = self._path(context)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            pickle.dump(obj, handle, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)

    def load_input(self, context: dg.InputContext) -> Any:
        path = self._path(context)
        if not path.exists():
            raise dg.Failure(
                f"No stored output for {context.asset_key.to_user_string()} at {path}: "
                "materialize the upstream assets for the same partitions first."
            )
        with path.open("rb") as handle:
            return pickle.load(handle)
