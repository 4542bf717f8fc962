"""What the sync asset and the plan op share: the step's process and stop signal, the local
work for the run's groups (CRM → normalize → dedupe), and the ``erzycall_api`` slot."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import dagster as dg
from dagster._core.storage.dagster_run import DagsterRunStatus

from erzy_pipelines.crm.state import StateStore
from erzy_pipelines.partitions import SyncScope, unknown_groups
from erzy_pipelines.pipeline import Extracted, Prepared, extract, group_keys_of, prepare
from erzy_pipelines.resources import CrmDatabaseResource
from erzy_pipelines.runtime.dead_runs import free_if_done
from erzy_pipelines.runtime.pool import PoolSlot
from erzy_pipelines.runtime.process import ProcessIdentity
from erzy_pipelines.runtime.stop import StopSignal, SyncStopped

Context = dg.AssetExecutionContext | dg.OpExecutionContext
STOPPING = (DagsterRunStatus.CANCELING, DagsterRunStatus.CANCELED)


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


def read_and_prepare(
    context: Context,
    *,
    crm: CrmDatabaseResource,
    store: StateStore,
    scope: SyncScope,
    region: str,
    stop: StopSignal,
) -> tuple[Extracted, Prepared]:
    """The run's CRM rows, normalized and deduped. Fails at once, naming the CRM's groups, when
    the run selected a group the CRM does not have."""
    engine = crm.engine()
    memberships = crm.memberships(engine)
    crm_groups = group_keys_of(memberships)
    unknown = unknown_groups(scope, crm_groups)
    if unknown:
        raise dg.Failure(
            description=f"The CRM has no group {', '.join(map(repr, unknown))}. Its groups are: "
            f"{', '.join(sorted(crm_groups)) or '(none)'}, and _ungrouped for contacts in no "
            "group. A partition for a group the CRM does not have was added by hand or outlived "
            "its group; crm_groups_sensor removes such partitions. Nothing was sent.",
            allow_retries=False,
        )
    extracted = extract(
        memberships=memberships,
        contact_chunks=lambda check: crm.contact_chunks(
            engine, memberships=memberships, between_fetches=check
        ),
        scope=scope,
        last_sent_with=store.crm_ids_last_sent_with,
        region=region,
        stop=stop,
    )
    context.log.info(
        f"read {len(extracted.rows)} CRM records ({scope.label}); "
        f"{extracted.same_phone} share a phone with a member, {extracted.stranded} left a group"
    )
    prepared = prepare(extracted.rows, region, stop)
    return extracted, prepared


def send_slot(context: Context, store: StateStore, stop: StopSignal) -> Callable:
    """The context manager a sync enters right before its first request: the ``erzycall_api``
    pool slot, then the leases of runs that have ended or died are given back (a killed run's
    in-flight contact must not wait out its lease)."""
    slot = PoolSlot(
        context.instance, context.run_id, context.op_handle.name, stop=stop, log=context.log.info
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
