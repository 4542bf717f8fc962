"""Which ErzyCall account each credential opens, as the state database records it.

A credential is an API base URL and the id of a key (``core.key_id``, never the key). The rules
that decide which account a new credential opens are the engine's (``sync/accounts.py``); this
module only reads and writes what they decided, atomically where two runs may race.
"""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlsplit, urlunsplit

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from erzy_pipelines.state.database import insert_ignore, run_write
from erzy_pipelines.state.schema import LEGACY_ACCOUNT, account_keys, accounts, contact_state
from erzy_pipelines.state.store import StateStore


def normalize_base_url(url: str) -> str:
    """Scheme and host lower-cased, no trailing slash: one spelling per endpoint."""
    parts = urlsplit(url.strip())
    path = parts.path.rstrip("/")
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), path, "", ""))


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def known_account(
    store: StateStore, base_url: str, key_id: str, *, touch: bool = True
) -> str | None:
    """The account this credential was seen with, or None (``touch``: note it was used now)."""
    keys = account_keys.c
    query = sa.select(keys.account_id).where(
        keys.base_url == normalize_base_url(base_url), keys.key_id == key_id
    )
    with store.engine.connect() as conn:
        found = conn.execute(query).scalar()
    if found is not None and touch:
        run_write(
            store.engine,
            lambda conn: conn.execute(
                account_keys.update()
                .where(keys.base_url == normalize_base_url(base_url), keys.key_id == key_id)
                .values(last_used=_now())
            ),
        )
    return found


def candidates(store: StateStore, namespace: str) -> list[str]:
    """Accounts of this namespace that hold contact state, most recently used first (legacy
    state, which only the environment-variable sync's namespace can take over, last)."""
    c, keys, a = contact_state.c, account_keys.c, accounts.c
    with_contacts = sa.select(c.account_id).where(c.remote_id.is_not(None)).distinct()
    used = sa.select(keys.account_id, sa.func.max(keys.last_used)).group_by(keys.account_id)
    in_namespace = sa.select(a.account_id).where(a.namespace == namespace)
    with store.engine.connect() as conn:
        mine = set(conn.execute(in_namespace).scalars())
        if namespace == "":
            mine.add(LEGACY_ACCOUNT)
        holders = [h for h in conn.execute(with_contacts).scalars() if h in mine]
        last_used = {account: when for account, when in conn.execute(used)}
    oldest = dt.datetime.min.replace(tzinfo=dt.UTC)

    def recency(account: str) -> tuple[bool, dt.datetime, str]:
        when = last_used.get(account)
        if when is not None and when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        return (when is not None, when or oldest, account)

    return sorted(holders, key=recency, reverse=True)


def register_credential(
    store: StateStore,
    base_url: str,
    key_id: str,
    account_id: str,
    *,
    new: bool,
    namespace: str = "",
) -> str:
    """Note that this credential opens ``account_id``; returns the account it is registered
    with. Two runs meeting a new credential at once (three group backfills started together)
    both probe and both try to register it: the first wins, and the other takes the winner's
    account instead of keeping state of its own, which would split the contacts' leases."""
    now = _now()
    keys = account_keys.c

    def txn(conn: Connection) -> str:
        row = {
            "base_url": base_url,
            "key_id": key_id,
            "account_id": account_id,
            "first_seen": now,
            "last_used": now,
        }
        insert_ignore(conn, account_keys, [row])
        winner = conn.execute(
            sa.select(keys.account_id).where(keys.base_url == base_url, keys.key_id == key_id)
        ).scalar_one()
        if new and winner == account_id:
            created = {"account_id": account_id, "label": base_url, "created_at": now}
            insert_ignore(conn, accounts, [{**created, "namespace": namespace}])
        return winner

    return run_write(store.engine, txn, read_committed=True)


def adopt_legacy(store: StateStore, account_id: str) -> None:
    """Move the state written before accounts into ``account_id`` (it was proven to be its)."""
    c = contact_state.c

    def txn(conn: Connection) -> None:
        conn.execute(
            contact_state.update().where(c.account_id == LEGACY_ACCOUNT).values(
                account_id=account_id
            )
        )

    run_write(store.engine, txn)
