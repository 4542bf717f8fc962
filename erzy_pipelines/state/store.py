"""The state store: contact state, leases, outcomes, audit and runs of one ErzyCall account.


Every write is its own short transaction, committed before the method returns, so a crash
between two requests loses nothing and a rerun resends nothing. Several processes may share
one database: per-phone leases keep two runs off the same contact, and on SQLite every write
transaction starts with ``BEGIN IMMEDIATE`` (WAL + busy timeout) so writers queue instead of
failing.
"""

from __future__ import annotations

from erzy_pipelines.state.audit import AuditStore
from erzy_pipelines.state.contacts import ContactStateStore
from erzy_pipelines.state.intents import IntentStore
from erzy_pipelines.state.leases import LeaseStore
from erzy_pipelines.state.runs import RunStore


class StateStore(ContactStateStore, LeaseStore, IntentStore, AuditStore, RunStore):
    """What the sync last confirmed in one ErzyCall account per phone, plus the audit trail and
    the run log.

    ``url`` is a SQLAlchemy URL or an Engine (reused, not disposed by :meth:`close`). Tables
    are created (and older layouts migrated) on construction. Contact state is kept per
    account: :meth:`with_account` gives a store bound to one (``DEFAULT_ACCOUNT`` otherwise).

    Writes about one contact that a run makes while sending are *fenced*: they only happen
    while ``run_id`` holds the contact's lease, else :class:`LeaseLost` is raised.
    """
