"""A rate-limit store in SQL, so every process spending one API key shares one budget.

The API counts requests per key, not per process: two runs (or a run and a backfill) each
keeping their own 60/min would together get 429s. This store records every request slot in a
table and decides under a per-key lock (``SELECT ... FOR UPDATE`` on PostgreSQL/MariaDB,
``BEGIN IMMEDIATE`` on SQLite), so check-and-record is atomic across processes.

Timestamps are wall-clock epoch seconds (``time.time()``): monotonic clocks are not comparable
between processes. Build the client's ``RateLimiter`` with ``clock=time.time`` when using it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from erzy_pipelines.core.budget import RateWindow
from erzy_pipelines.state.database import (
    create_store_engine,
    create_tables,
    insert_ignore,
    run_write,
)
from erzy_pipelines.state.schema import ID_TYPE, TABLE_OPTIONS

__all__ = ["SqlRateLimitStore", "rate_limit_events", "rate_limit_keys"]

metadata = sa.MetaData()

rate_limit_keys = sa.Table(
    "erzy_rate_limit_keys",
    metadata,
    sa.Column("key_id", sa.String(64), primary_key=True),
    **TABLE_OPTIONS,
)

rate_limit_events = sa.Table(
    "erzy_rate_limit_events",
    metadata,
    sa.Column("id", ID_TYPE, primary_key=True, autoincrement=True),
    sa.Column("key_id", sa.String(64), nullable=False),
    sa.Column("at", sa.Double(), nullable=False),  # epoch seconds; DOUBLE keeps sub-ms precision
    sa.Index("ix_erzy_rate_limit_events_key_at", "key_id", "at"),
    **TABLE_OPTIONS,
)


class SqlRateLimitStore:
    """``RateLimitStore`` backed by the ``erzy_rate_limit_*`` tables of a shared database.

    ``key_id`` names the budget (``core.key_id.key_id``; never the key itself).
    """

    def __init__(self, url_or_engine: str | sa.URL | Engine, key_id: str) -> None:
        if not key_id or len(key_id) > 64:
            raise ValueError("key_id must be 1-64 characters")
        if key_id.startswith(("ek_live_", "ek_test_", "ek_")):
            raise ValueError("key_id looks like an API key; pass key_id(api_key) instead")
        self.key_id = key_id
        self._engine, self._owned = create_store_engine(url_or_engine)
        create_tables(self._engine, metadata)
        run_write(
            self._engine,
            lambda conn: insert_ignore(conn, rate_limit_keys, [{"key_id": key_id}]),
        )

    def __repr__(self) -> str:
        return f"SqlRateLimitStore(key_id={self.key_id[:12]}…, db={self._engine.dialect.name})"

    def close(self) -> None:
        """Dispose the engine if this store created it."""
        if self._owned:
            self._engine.dispose()

    def try_acquire(self, now: float, windows: Sequence[RateWindow]) -> float:
        """Record a slot at ``now`` (epoch seconds) and return 0.0, or return seconds to wait.

        A request at ``t`` occupies each window until ``t + seconds`` (same arithmetic as the
        in-memory store); nothing is recorded when a wait is returned.
        """
        windows = tuple(windows)
        if not windows:
            raise ValueError("at least one window is required")
        longest = max(w.seconds for w in windows)
        ev = rate_limit_events.c

        def txn(conn: Connection) -> float:
            if conn.dialect.name != "sqlite":  # SQLite: BEGIN IMMEDIATE already serializes
                conn.execute(
                    sa.select(rate_limit_keys.c.key_id)
                    .where(rate_limit_keys.c.key_id == self.key_id)
                    .with_for_update()
                ).first()
            conn.execute(
                rate_limit_events.delete().where(ev.key_id == self.key_id, ev.at <= now - longest)
            )
            wait = 0.0
            for w in windows:
                # The limit-th newest request in the window: the window is full until it leaves.
                blocking = conn.execute(
                    sa.select(ev.at)
                    .where(ev.key_id == self.key_id, ev.at > now - w.seconds)
                    .order_by(ev.at.desc())
                    .offset(int(w.limit) - 1)
                    .limit(1)
                ).scalar()
                if blocking is not None:
                    wait = max(wait, float(blocking) + w.seconds - now)
            if wait > 0:
                return wait
            conn.execute(rate_limit_events.insert().values(key_id=self.key_id, at=now))
            return 0.0

        return run_write(self._engine, txn, read_committed=True)

    def recorded(self, since: float | None = None) -> list[float]:
        """Recorded slot times for this key, ascending (for inspection and tests)."""
        ev = rate_limit_events.c
        query = sa.select(ev.at).where(ev.key_id == self.key_id).order_by(ev.at)
        if since is not None:
            query = query.where(ev.at > since)
        with self._engine.connect() as conn:
            return [float(a) for a in conn.execute(query).scalars()]
