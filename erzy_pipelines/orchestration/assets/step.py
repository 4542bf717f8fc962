"""What the sync asset and the plan op share: the step's process and stop signal, the local
work for the run's groups (CRM → normalize → dedupe), and the ``erzycall_api`` slot."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import NamedTuple

import dagster as dg
from dagster._core.storage.dagster_run import DagsterRunStatus
from sqlalchemy import exc as sa_exc

from erzy_pipelines.core.budget import format_duration
from erzy_pipelines.core.removal import Removal, read_collapsed
from erzy_pipelines.core.scope import SyncScope, unknown_groups
from erzy_pipelines.erzycall import errors
from erzy_pipelines.orchestration.dead_runs import free_if_done
from erzy_pipelines.orchestration.names import SyncNames
from erzy_pipelines.orchestration.partitions import (
    WHOLE_CRM_TAG,
    WHOLE_CRM_TAGS,
    run_partition_keys,
    whole_only_if_complete,
)
from erzy_pipelines.orchestration.pool import PoolSlot
from erzy_pipelines.orchestration.process import ProcessIdentity
from erzy_pipelines.orchestration.resources import (
    CrmDatabaseResource,
    ErzyCallResource,
    SyncPolicyResource,
    SyncStateResource,
)
from erzy_pipelines.state import StateStore
from erzy_pipelines.sync.accounts import Account, DoubtfulProbe
from erzy_pipelines.sync.opening import open_account, read_crm
from erzy_pipelines.sync.prepare import (
    Extracted,
    Prepared,
    StaleRecordCache,
)
from erzy_pipelines.sync.stop import StopSignal, SyncStopped

Context = dg.AssetExecutionContext | dg.OpExecutionContext
STOPPING = (DagsterRunStatus.CANCELING, DagsterRunStatus.CANCELED)


class SyncResources(NamedTuple):
    """One sync's four resources, found under its names (``crm`` or ``<name>_crm``...)."""

    crm: CrmDatabaseResource
    state: SyncStateResource
    policy: SyncPolicyResource
    erzycall: ErzyCallResource

    KINDS = ("crm", "state", "policy", "erzycall")

    @classmethod
    def keys(cls, names: SyncNames) -> set[str]:
        return {names.name(kind) for kind in cls.KINDS}

    @classmethod
    def of(cls, context: Context, names: SyncNames) -> SyncResources:
        return cls(*(getattr(context.resources, names.name(kind)) for kind in cls.KINDS))


@contextmanager
def sync_step(context: Context) -> Iterator[StopSignal]:
    """Record this process in the run's tags (so a later run can tell if it died), and turn
    SIGTERM, Ctrl-C or a cancel from the UI into a stop. A stopped step marks its run as
    canceling, so Dagster ends it canceled rather than failed."""
    instance, run_id = context.instance, context.run_id
    instance.add_run_tags(run_id, ProcessIdentity.current().tags())

    def canceled() -> bool:
        run = instance.get_run_by_id(run_id)
        return run is not None and run.status in STOPPING

    stop = StopSignal(canceled)
    with stop.on_signals():
        try:
            yield stop
        except SyncStopped:
            run = instance.get_run_by_id(run_id)
            if run is not None and run.status not in STOPPING:
                instance.report_run_canceling(run, f"Stop requested: {stop.reason}.")
            raise dg.Failure(
                description=f"Stopped on request ({stop.reason}). The request in flight was "
                "finished; what was not sent is deferred and goes first next run.",
                allow_retries=False,
            ) from None


STEP_RETRIES = 2
STEP_RETRY_SECONDS = 5


@contextmanager
def retried_on_infrastructure(context: Context) -> Iterator[None]:
    """The state database or the network went away: retry the whole step (after 5 s, then
    10 s). Safe: every outcome is committed per contact and a retried intent reuses its key."""
    try:
        yield
    except (sa_exc.OperationalError, errors.TransportError, StaleRecordCache) as exc:
        wait = STEP_RETRY_SECONDS * 2**context.retry_number
        raise dg.RetryRequested(max_retries=STEP_RETRIES, seconds_to_wait=wait) from exc


def read_and_prepare(
    context: Context,
    *,
    crm: CrmDatabaseResource,
    store: StateStore,
    scope: SyncScope,
    region: str,
    stop: StopSignal,
    replan_all: bool = False,
) -> tuple[Extracted, Prepared, SyncScope]:
    """The run's CRM read and prepared (``sync/opening.py``), its scope as the CRM's groups
    decide it. Fails at once, naming the CRM's groups, when the run selected a group the CRM
    does not have."""

    def scope_of(crm_groups: set[str]) -> SyncScope:
        decided = whole_only_if_complete(
            scope,
            run_partition_keys(context),
            crm_groups,
            asked_whole=context.run.tags.get(WHOLE_CRM_TAG) == WHOLE_CRM_TAGS[WHOLE_CRM_TAG],
        )
        unknown = unknown_groups(decided, crm_groups)
        if unknown:
            raise dg.Failure(
                description=f"The CRM has no group {', '.join(map(repr, unknown))}. Its groups "
                f"are: {', '.join(sorted(crm_groups)) or '(none)'}, and _ungrouped for contacts "
                "in no group. A partition for a group the CRM does not have was added by hand or "
                "outlived its group; crm_groups_sensor removes such partitions. Nothing was sent.",
                allow_retries=False,
            )
        return decided

    return read_crm(
        crm,
        store,
        scope_of=scope_of,
        region=region,
        stop=stop,
        log=context.log.info,
        replan_all=replan_all,
    )


def send_slot(context: Context, store: StateStore, stop: StopSignal, pool: str) -> Callable:
    """The context manager a sync enters right before its first request: its ``pool`` slot
    (``erzycall_api``, or ``<name>_erzycall_api``), then the leases of runs that have ended or
    died are given back (a killed run's in-flight contact must not wait out its lease)."""
    slot = PoolSlot(
        context.instance,
        context.run_id,
        context.op_handle.name,
        stop=stop,
        log=context.log.info,
        pool=pool,
    )

    @contextmanager
    def held() -> Iterator[None]:
        with slot.held():
            for holder in store.lease_holders():
                if holder == context.run_id:
                    continue
                reason = free_if_done(context.instance, holder)
                if reason is not None:
                    released = store.release_all(holder)
                    context.log.info(f"Released {released} lease(s) of {reason}.")
            yield

    return held


def bind_account(
    context: Context,
    store: StateStore,
    erzycall: ErzyCallResource,
    state: SyncStateResource,
    stop: StopSignal,
    *,
    dry_run: bool,
) -> tuple[StateStore, Account]:
    """The state of the ErzyCall account this run addresses, in the sync's namespace
    (``sync/opening.py``); it is said in the log when it was not simply known."""
    try:
        store, account = open_account(
            store,
            erzycall.credential(state.namespace),
            lambda: erzycall.make_client(state.url, sleep=stop.sleep),
            dry_run=dry_run,
        )
    except DoubtfulProbe as exc:
        raise dg.Failure(description=f"Sync stopped before sending anything: {exc}.",
                         allow_retries=False) from None
    if not account.known:
        spent = f" ({account.probes} request(s) to find out)" if account.probes else ""
        context.log.info(f"ErzyCall account {account.account_id}: {account.note}{spent}.")
    return store, account


def removal_for(
    policy: SyncPolicyResource, scope: SyncScope, extracted: Extracted, store: StateStore
) -> Removal | None:
    """The opt-in removal of a run over the whole CRM (a group run never removes anything)."""
    if not policy.delete_removed or scope.groups is not None:
        return None
    records = extracted.records
    return Removal(
        present_phones=frozenset(r.phone for r in records if r.phone is not None),
        present_crm_ids=frozenset(r.crm_id for r in records if r.crm_id is not None),
        max_per_run=policy.max_deletions_per_run,
        max_share=policy.max_deletion_share,
        before=extracted.read_started,
        last_read=store.last_whole_read(),
    )


def note_whole_read(
    store: StateStore, run_id: str, scope: SyncScope, extracted: Extracted, max_share: float
) -> None:
    """Keep how many records a whole-CRM read returned, as the next removal's yardstick, unless
    the read looks collapsed against the current one (then the yardstick stays as it was)."""
    if scope.groups is not None:
        return
    read = len(extracted.records)
    if read_collapsed(read, store.last_whole_read(), max_share) is None:
        store.note_whole_read(run_id, read)


def budget_spent_message(frees_at: float, counts: Mapping[str, int]) -> str:
    when = dt.datetime.fromtimestamp(frees_at, dt.UTC)
    wait = frees_at - time.time()
    frees = (
        f"It frees at {when:%H:%M:%S} UTC (in {format_duration(wait)})"
        if wait >= 1
        else "It may free at any moment, but the API kept answering 429"
    )
    return (
        f"The API key's request budget is spent (by this run or another client using the same "
        f"key): the API answered 429 for longer than a run waits. {frees}. "
        f"{counts.get('deferred', 0)} contact(s) deferred; they go first next run. This is not "
        "an outage."
    )
