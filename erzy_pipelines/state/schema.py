"""The state database's tables: contact state, accounts and their keys, the audit, the runs.

Every table is prefixed ``erzy_`` and created by ``database.create_tables``; older
layouts are brought up to date by :mod:`erzy_pipelines.state.migrations`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

ERROR_MESSAGE_MAX = 1000
RUN_COUNT_FIELDS = (
    "created",
    "updated",
    "unchanged",
    "merged",
    "rejected",
    "failed",
    "deferred",
    "planned",
    "requests",
    "deleted",  # contacts the sync created and removed (opt-in, core/removal.py)
    "drift_deleted",  # a reconcile's repairs: contacts deleted in ErzyCall, created again
    "drift_edited",  # contacts edited in ErzyCall, their synced fields set back
)



class UtcDateTime(sa.TypeDecorator):
    """Timezone-aware UTC datetimes on every backend.

    PostgreSQL keeps ``timestamptz``; SQLite and MariaDB have no zone, so UTC is stored naive
    (MariaDB with microseconds) and the zone is put back on read.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(sa.DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; pass a timezone-aware (UTC) datetime")
        value = value.astimezone(UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


# MariaDB's TEXT stops at 64 KB; a payload with large custom fields must still fit.
LongText = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")
ID_TYPE = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite autoincrement needs INTEGER
TABLE_OPTIONS = {"mysql_charset": "utf8mb4", "mysql_engine": "InnoDB"}  # for every erzy_ table

metadata = sa.MetaData()

DEFAULT_ACCOUNT = "default"
"""The account of a store not bound to one (tools and tests that use a single account)."""
LEGACY_ACCOUNT = "legacy"
"""Contact state written before states were bound to accounts; claimed by the first account
whose contacts it is shown to describe (see ``sync/accounts.py``)."""

contact_state = sa.Table(
    "erzy_contacts",
    metadata,
    sa.Column("account_id", sa.String(32), primary_key=True),
    sa.Column("phone", sa.String(20), primary_key=True),
    sa.Column("remote_id", sa.String(64)),
    sa.Column("last_payload", LongText),
    sa.Column("last_hash", sa.String(64)),
    sa.Column("crm_ids", LongText),
    sa.Column("created_by_sync", sa.Boolean(), nullable=False, default=False),
    sa.Column("last_outcome", sa.String(32)),
    sa.Column("last_error_code", sa.String(64)),
    sa.Column("last_error_message", sa.Text()),
    sa.Column("rejected_hash", sa.String(64)),
    sa.Column("failure_count", sa.Integer(), nullable=False, default=0),
    sa.Column("intent_seq", sa.Integer(), nullable=False, default=0),
    sa.Column("pending_hash", sa.String(64)),
    sa.Column("pending_key", sa.String(255)),
    sa.Column("pending_run_id", sa.String(64)),
    sa.Column("deferred", sa.Integer(), nullable=False, default=0),
    sa.Column("lease_run_id", sa.String(64), index=True),
    sa.Column("lease_until", sa.Double()),  # epoch seconds; DOUBLE, a 4-byte FLOAT loses minutes
    sa.Column("updated_at", UtcDateTime()),
    # The fingerprint of the CRM records the payload of last_hash was made from (set only
    # together with last_hash): equal to this run's, with nothing pending, the contact needs no
    # work at all (see ``sync/prepare.py``).
    sa.Column("source_fp", sa.BigInteger()),
    # When the CRM read that last_payload came from began (epoch seconds): a run whose own read
    # began earlier never sends this contact (it would write an older CRM value back).
    sa.Column("source_read_at", sa.Double()),
    # When a write (or baseline) last confirmed what ErzyCall holds (epoch seconds): what the
    # account probe ranks contacts by; claims, failures and deferrals leave it alone.
    sa.Column("confirmed_at", sa.Double()),
    **TABLE_OPTIONS,
)

crm_records = sa.Table(
    "erzy_crm_records",
    metadata,
    sa.Column("account_id", sa.String(32), primary_key=True),
    sa.Column("crm_id", sa.String(255), primary_key=True),
    sa.Column("fingerprint", sa.BigInteger(), nullable=False),  # of what was read, and the rules
    sa.Column("phone", sa.String(20)),  # E.164, when normalization accepted the record
    # The normalized contact (``core.contact_codec.encode_contact``), or NULL for a reject.
    sa.Column("contact", sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")),
    sa.Column("reject_reason", sa.String(64)),
    sa.Column("reject_detail", sa.Text()),
    sa.Column("reject_phone", sa.String(255)),
    **TABLE_OPTIONS,
)

accounts = sa.Table(
    "erzy_accounts",
    metadata,
    sa.Column("account_id", sa.String(32), primary_key=True),
    sa.Column("label", sa.String(500)),  # the API base URL it was first seen at
    sa.Column("created_at", UtcDateTime(), nullable=False),
    # The sync it belongs to: "" for the environment-variable sync, else the sync's name.
    sa.Column("namespace", sa.String(64), nullable=False, server_default=""),
    **TABLE_OPTIONS,
)

account_keys = sa.Table(
    "erzy_account_keys",
    metadata,
    sa.Column("base_url", sa.String(500), primary_key=True),
    sa.Column("key_id", sa.String(32), primary_key=True),  # a hash of the key, never the key
    sa.Column("account_id", sa.String(32), nullable=False),
    sa.Column("first_seen", UtcDateTime(), nullable=False),
    sa.Column("last_used", UtcDateTime(), nullable=False),
    **TABLE_OPTIONS,
)

sync_audit = sa.Table(
    "erzy_sync_audit",
    metadata,
    sa.Column("id", ID_TYPE, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(64), index=True),
    sa.Column("account_id", sa.String(32)),
    sa.Column("partition_key", sa.String(255)),
    sa.Column("crm_ids", sa.Text()),
    sa.Column("phone", sa.String(64), index=True),  # may be a raw, unparseable CRM value
    sa.Column("action", sa.String(32)),
    sa.Column("outcome", sa.String(32)),
    sa.Column("http_status", sa.Integer()),
    sa.Column("error_code", sa.String(64)),
    sa.Column("error_message", sa.Text()),
    sa.Column("attempts", sa.Integer()),
    sa.Column("remote_id", sa.String(64)),
    sa.Column("payload_hash", sa.String(64)),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    **TABLE_OPTIONS,
)

sync_runs = sa.Table(
    "erzy_sync_runs",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("account_id", sa.String(32)),
    sa.Column("partition_key", sa.String(255)),
    sa.Column("started_at", UtcDateTime(), nullable=False, index=True),
    sa.Column("finished_at", UtcDateTime()),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("dry_run", sa.Boolean(), nullable=False, default=False),
    *(sa.Column(name, sa.Integer(), nullable=False, default=0) for name in RUN_COUNT_FIELDS),
    # Records a whole-CRM read returned, unless it looked collapsed: the removal's yardstick.
    sa.Column("crm_records", sa.Integer()),
    **TABLE_OPTIONS,
)

AUDIT_FIELDS = tuple(c.name for c in sync_audit.columns if c.name not in ("id", "account_id"))
