"""The run log: one row per run, its counts and status."""

from __future__ import annotations

from collections.abc import Mapping

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from erzy_pipelines.core.outcomes import RunStatus
from erzy_pipelines.state.base import StoreBase
from erzy_pipelines.state.database import insert_ignore, utcnow
from erzy_pipelines.state.schema import RUN_COUNT_FIELDS, sync_runs


class RunStore(StoreBase):
    """The run log: one row per run, its counts and status."""

    def start_run(self, run_id: str, partition_key: str | None, dry_run: bool) -> None:
        """Record a run as running; a retried ``run_id`` is reopened, keeping ``started_at``."""
        reopen = {
            "account_id": self.account,
            "partition_key": partition_key,
            "dry_run": bool(dry_run),
            "status": RunStatus.RUNNING,
            "finished_at": None,
        }

        def txn(conn: Connection) -> None:
            insert_ignore(conn, sync_runs, [{"run_id": run_id, "started_at": utcnow(), **reopen}])
            conn.execute(sync_runs.update().where(sync_runs.c.run_id == run_id).values(reopen))

        self._write(txn)

    def finish_run(self, run_id: str, counts: Mapping[str, int], status: str) -> None:
        """Close a run with its outcome counts (keys from :data:`RUN_COUNT_FIELDS`)."""
        unknown = set(counts) - set(RUN_COUNT_FIELDS)
        if unknown:
            raise ValueError(f"unknown run counts: {sorted(unknown)}")
        now = utcnow()
        values = {**{k: int(v) for k, v in counts.items()}, "status": status, "finished_at": now}

        def txn(conn: Connection) -> None:
            insert_ignore(
                conn, sync_runs, [{"run_id": run_id, "started_at": now, "status": status}]
            )
            conn.execute(sync_runs.update().where(sync_runs.c.run_id == run_id).values(values))

        self._write(txn)

    def note_whole_read(self, run_id: str, records: int) -> None:
        """How many records this run's whole-CRM read returned (see ``last_whole_read``)."""

        def txn(conn: Connection) -> None:
            row = {"run_id": run_id, "started_at": utcnow(), "status": RunStatus.RUNNING}
            insert_ignore(conn, sync_runs, [row])
            conn.execute(
                sync_runs.update()
                .where(sync_runs.c.run_id == run_id)
                .values(crm_records=records, account_id=self.account)
            )

        self._write(txn)

    def last_whole_read(self) -> int | None:
        """Records the latest whole-CRM read of this account returned that did not look
        collapsed: what the removal compares a read with (``core/removal.py``)."""
        r = sync_runs.c
        query = (
            sa.select(r.crm_records)
            .where(r.account_id == self.account, r.crm_records.is_not(None))
            .order_by(r.started_at.desc(), r.run_id.desc())
            .limit(1)
        )
        with self._engine.connect() as conn:
            return conn.execute(query).scalar()

    def runs(self, limit: int = 20) -> list[dict]:
        """Recorded runs, newest first."""
        query = (
            sa.select(sync_runs)
            .order_by(sync_runs.c.started_at.desc(), sync_runs.c.run_id.desc())
            .limit(limit)
        )
        with self._engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(query).mappings()]
        for row in rows:
            row["dry_run"] = bool(row["dry_run"])
        return rows

    def last_run(self) -> dict | None:
        """The most recently started run, or None."""
        found = self.runs(limit=1)
        return found[0] if found else None
