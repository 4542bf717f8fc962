"""The dry run: a job that plans a sync and sends nothing.

A plan is not a materialization. ``erzycall_plan`` reads the CRM, normalizes, dedupes and plans
exactly as the sync would, then records the plan as *observations* of the sync's assets (per
group, and once for the run): no partition turns green, ``sync_audit`` keeps the last real
run, and nothing is sent — the job never builds an API client. The plan's operations are in the
state database's audit as ``planned``.
"""


import time
from collections.abc import Iterator

import dagster as dg

from erzy_pipelines.core.group_figures import group_figures
from erzy_pipelines.orchestration.assets import events
from erzy_pipelines.orchestration.assets.step import (
    SyncResources,
    bind_account,
    note_whole_read,
    read_and_prepare,
    removal_for,
    sync_step,
)
from erzy_pipelines.orchestration.names import DEFAULT, SyncNames
from erzy_pipelines.orchestration.partitions import partitions_def, run_partition_keys, scope_for
from erzy_pipelines.sync.run import RunRequest, execute_run
from erzy_pipelines.sync.send import Budget


def build_plan_job(names: SyncNames = DEFAULT) -> dg.JobDefinition:
    """The dry-run job of one sync (``erzycall_plan`` or ``<name>_erzycall_plan``)."""

    @dg.op(
        name=names.name("plan_contacts"),
        out={},
        required_resource_keys=SyncResources.keys(names),
        description="Plans the sync of the run's groups (requests needed, ETA) and sends "
        "nothing.",
    )
    def plan_contacts(context: dg.OpExecutionContext) -> Iterator[dg.AssetObservation]:
        yield from _plan(context, names, SyncResources.of(context, names))

    return dg.GraphDefinition(name=names.plan_job, node_defs=[plan_contacts]).to_job(
        partitions_def=partitions_def(names),
        executor_def=dg.in_process_executor,
        description="Dry run: plans the sync of the chosen groups (requests needed, ETA at your "
        "limits) and records the plan as observations. Sends nothing, materializes nothing.",
    )


def _plan(
    context: dg.OpExecutionContext, names: SyncNames, resources: SyncResources
) -> Iterator[dg.AssetObservation]:
    crm, state, policy, erzycall = resources
    started = time.monotonic()
    store, scope, windows = state.store(), scope_for(context, names), erzycall.windows()
    with sync_step(context) as stop:
        store, account = bind_account(context, store, erzycall, state, stop, dry_run=True)
        extracted, prepared, scope = read_and_prepare(
            context, crm=crm, store=store, scope=scope, region=policy.default_region, stop=stop
        )
        summary = execute_run(RunRequest(
            **prepared.sync_inputs(),
            store=store,
            client_factory=lambda sleep: None,  # never called on a dry run
            run_id=context.run_id,
            partition_key=scope.label,
            dry_run=True,
            removal=removal_for(policy, scope, extracted, store),
            account=account,
            ownership=policy.owner(extracted.managed_groups),
        ))
        note_whole_read(store, context.run_id, scope, extracted, policy.max_deletion_share)
        figures = group_figures(
            run_partition_keys(context),
            extracted.records,
            **prepared.parts(),
            skipped=[op.contact for op in summary.plan.skipped],
            results=summary.report.results,
        )
        yield from events.partition_events(
            figures, extracted, windows=windows, planned=True, names=names
        )
        yield events.run_observation(
            events.run_totals(
                summary, scope.label, extracted, prepared, Budget(), windows, store, started
            ),
            windows,
            names,
        )
        context.log.info(
            f"plan: {summary.plan.requests_needed} requests for {scope.label}; nothing was sent"
        )


erzycall_plan = build_plan_job()
