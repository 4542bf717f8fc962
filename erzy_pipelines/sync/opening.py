"""Opening a run: the ErzyCall account its state describes, then the CRM read and prepared.

The sync, the plan (dry run) and ``erzy-pipelines baseline`` all open their runs here, so the
account is recognized, and the CRM read, one way. Dagster decides only what is Dagster's: the
run's scope from its partitions, and how a failure is reported.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from sqlalchemy.engine import Engine

from erzy_pipelines.core.crm_row import Membership
from erzy_pipelines.core.scope import SyncScope
from erzy_pipelines.crm.extract import group_keys_of
from erzy_pipelines.erzycall.client import ErzyCallClient
from erzy_pipelines.state import StateStore
from erzy_pipelines.state.record_cache import RecordCache
from erzy_pipelines.sync.accounts import Account, Credential, Probe, account_for_run, probe_with
from erzy_pipelines.sync.prepare import Extracted, Prepared, gc_paused, prepare_incremental
from erzy_pipelines.sync.stop import StopSignal


class CrmSource(Protocol):
    """The user's CRM as a run reads it: an engine, the memberships, the contacts in batches."""

    def engine(self) -> Engine: ...

    def memberships(self, engine: Engine) -> Mapping[str, Sequence[Membership]]: ...

    def raw_batches(self, engine: Engine, **kwargs: Any) -> Iterator[tuple[list[str], Any]]: ...


def open_account(
    store: StateStore,
    credential: Credential,
    make_client: Callable[[], ErzyCallClient],
    *,
    dry_run: bool,
) -> tuple[StateStore, Account]:
    """The state of the ErzyCall account ``credential`` addresses (``accounts.py``): known at no
    cost, or recognized with a few GETs, every one of which (retries included) is counted in
    ``Account.probes``. Raises ``DoubtfulProbe`` when the answers cannot be trusted."""
    sent = 0

    @contextlib.contextmanager
    def probing() -> Iterator[Probe]:
        nonlocal sent
        with contextlib.closing(make_client()) as client:
            try:
                yield probe_with(client)
            finally:
                sent = client.requests_sent

    account = account_for_run(store, credential, dry_run=dry_run, open_probe=probing)
    account = dataclasses.replace(account, probes=sent)
    return store.with_account(account.account_id), account


def read_crm(
    crm: CrmSource,
    store: StateStore,
    *,
    scope_of: Callable[[set[str]], SyncScope],
    region: str,
    stop: StopSignal,
    log: Callable[[str], None],
    replan_all: bool = False,
) -> tuple[Extracted, Prepared, SyncScope]:
    """The run's CRM records, normalized where they changed, and the contacts to plan
    (``prepare.py``; ``replan_all``: every contact, for a full resync or a baseline).

    ``scope_of(crm_groups)`` decides the run's scope once the CRM's groups are known (and may
    refuse the run). A group run also reads the records last sent with its groups, so a record
    that left the group is seen leaving it.
    """
    read_started = dt.datetime.now(dt.UTC)
    engine = crm.engine()
    with gc_paused():
        memberships = crm.memberships(engine)
        scope = scope_of(group_keys_of(memberships))
        extra: set[str] = set()
        if scope.groups is not None:
            group_ids = {
                gid
                for groups in memberships.values()
                for key, gid in groups
                if key in scope.groups and gid
            }
            extra = store.crm_ids_last_sent_with(group_ids)
        extracted, prepared = prepare_incremental(
            batches=crm.raw_batches(engine, between_fetches=stop.check),
            memberships=memberships,
            scope=scope,
            extra=extra,
            cache=RecordCache(store),
            settled_lookup=store.settled_fingerprints,
            region=region,
            stop=stop,
            replan_all=replan_all,
            log=log,
        )
    extracted.read_started = read_started
    log(
        f"{scope.label}: {len(extracted.records)} CRM records ({extracted.same_phone} share a "
        f"phone with a member, {extracted.stranded} left a group); "
        f"{prepared.contact_count} contacts, {len(prepared.settled)} settled, "
        f"{len(prepared.contacts)} to plan"
    )
    return extracted, prepared, scope
