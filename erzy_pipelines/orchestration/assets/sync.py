"""The sync: five assets computed in one step, from the CRM to ErzyCall and the audit.

``crm_contacts → normalized_contacts → deduped_contacts → erzycall_contacts → sync_audit`` is
one ``@multi_asset`` that cannot be subset. Every run reads the CRM itself and passes its rows
from stage to stage in memory, so no run can read another run's data (another sync started from
the same folder, an earlier dry run, yesterday's run) and no personal data is written to disk.
Each asset still gets its own materialization per group partition, with that group's figures,
and its own checks. Selecting one of them in the UI materializes all five: sending is only ever
done from data read in the same run.
"""


import time
from collections.abc import Iterator

import dagster as dg

from erzy_pipelines.core.budget import RateWindow, format_duration, seconds_for_requests
from erzy_pipelines.core.dedupe import duplicate_phones
from erzy_pipelines.core.group_figures import GroupFigures, group_figures
from erzy_pipelines.orchestration.assets import events
from erzy_pipelines.orchestration.assets.events import CONTACTS, DEDUPED, NORMALIZED, SYNC_KEYS
from erzy_pipelines.orchestration.assets.schemas import (
    AUDIT_SCHEMA,
    CRM_SCHEMA,
    DEDUPED_SCHEMA,
    NORMALIZED_SCHEMA,
    OPERATIONS_SCHEMA,
)
from erzy_pipelines.orchestration.assets.step import (
    SyncResources,
    bind_account,
    budget_spent_message,
    note_whole_read,
    read_and_prepare,
    removal_for,
    retried_on_infrastructure,
    send_slot,
    sync_step,
)
from erzy_pipelines.orchestration.names import DEFAULT, SyncNames
from erzy_pipelines.orchestration.partitions import partitions_def, run_partition_keys, scope_for
from erzy_pipelines.orchestration.resources import SyncPolicyResource
from erzy_pipelines.sync.prepare import Extracted, Prepared
from erzy_pipelines.sync.run import RunRequest, RunSummary, execute_run
from erzy_pipelines.sync.send import Budget
from erzy_pipelines.sync.stop import SyncStopped

_SPECS = (
    (
        "Raw contacts of the selected CRM groups (all their memberships attached), plus the "
        "records that share a phone with one of them or were last sent with one of the groups, "
        "read with your SQL in chunks.",
        {"sql"},
        CRM_SCHEMA,
    ),
    (
        "One row per CRM record: E.164 phone, cleaned fields within the API's limits, or a "
        "reject reason. Rejected rows never cost a request.",
        {"python"},
        NORMALIZED_SCHEMA,
    ),
    (
        "One contact per phone: the most recently updated record wins scalar fields, tags and "
        "groups are unioned. Nothing is sent while a phone is still duplicated.",
        {"python"},
        DEDUPED_SCHEMA,
    ),
    (
        "The contacts in ErzyCall: unchanged → no request, new → POST, changed → PATCH of the "
        "changed fields, each with an idempotency key; every outcome is committed to the state "
        "database as soon as it is known. One row per operation.",
        {"api"},
        OPERATIONS_SCHEMA,
    ),
    (
        "The audit of the run: its rows of the state database's erzy_sync_audit table (one per "
        "operation, reject and merge; unchanged contacts are counted in erzy_sync_runs).",
        {"table"},
        AUDIT_SCHEMA,
    ),
)

def sync_specs(names: SyncNames) -> list[dg.AssetSpec]:
    """The five assets of one sync."""
    keys = names.asset_keys
    return [
        dg.AssetSpec(
            key,
            deps=[keys[i - 1]] if i else [],
            description=description,
            kinds=kinds,
            group_name=names.group,
            partitions_def=partitions_def(names),
            metadata={"dagster/column_schema": schema},
            skippable=True,  # materialized through per-partition events, never an output value
        )
        for i, (key, (description, kinds, schema)) in enumerate(zip(keys, _SPECS, strict=True))
    ]


def sync_checks(names: SyncNames) -> list[dg.AssetCheckSpec]:
    """The checks of one sync's assets."""
    return [
        dg.AssetCheckSpec(
            spec.name,
            asset=names.key(spec.asset_key.path[-1]),
            description=spec.description,
            blocking=spec.blocking,
        )
        for spec in _CHECKS
    ]


_CHECKS = [
    dg.AssetCheckSpec(
        "reject_rate_below_threshold",
        asset=NORMALIZED,
        description="Warns when more than ERZY_REJECT_RATE_WARN of the CRM records read "
        "cannot be sent (missing or invalid phones, too many groups...).",
    ),
    dg.AssetCheckSpec(
        "no_duplicate_phones",
        asset=DEDUPED,
        blocking=True,
        description="ErzyCall allows one contact per phone: if two deduped contacts share a "
        "phone, the run stops before sending anything.",
    ),
    dg.AssetCheckSpec(
        "deletions_within_guards",
        asset=CONTACTS,
        description="With ERZY_DELETE_REMOVED on: fails, deleting nothing, when more contacts "
        "the sync created lost their CRM records than ERZY_MAX_DELETIONS_PER_RUN or "
        "ERZY_MAX_DELETION_SHARE allow (a broken query must not empty ErzyCall).",
    ),
    dg.AssetCheckSpec(
        "no_failed_operations",
        asset=CONTACTS,
        description="Warns when operations failed this run (they are retried next run; a "
        "payload the API rejected is retried once the contact changes).",
    ),
]


class SyncRunConfig(dg.Config):
    """Per-run choices, settable in the launchpad or with `erzy-pipelines sync` flags."""

    full_resync: bool = False
    """List ErzyCall (one request per 100 contacts) and repair any drift from the CRM."""
    max_requests: int = 0
    """Most requests this run may spend (0 = ERZY_MAX_REQUESTS_PER_RUN)."""
    max_run_seconds: float = 0.0
    """Longest this run may send for, seconds (0 = ERZY_MAX_RUN_SECONDS)."""


def _budget(config: SyncRunConfig, policy: SyncPolicyResource) -> Budget:
    requests = config.max_requests or policy.max_requests_per_run
    seconds = config.max_run_seconds or policy.max_run_seconds
    return Budget(max_requests=requests or None, max_seconds=seconds or None)


def reject_rate_check(
    prepared: Prepared, threshold: float, names: SyncNames = DEFAULT
) -> dg.AssetCheckResult:
    rejected = len(prepared.rejects)
    total = prepared.accepted + rejected
    rate = rejected / total if total else 0.0
    return dg.AssetCheckResult(
        asset_key=names.key(NORMALIZED),
        check_name="reject_rate_below_threshold",
        passed=rate <= threshold,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"reject_rate": round(rate, 4), "threshold": threshold, "rejected": rejected},
    )


def _duplicates_check(duplicated: list[str], names: SyncNames) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=names.key(DEDUPED),
        check_name="no_duplicate_phones",
        passed=not duplicated,
        metadata={"duplicated_phones": len(duplicated)},
    )


def _failed_check(failed: int, names: SyncNames) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=names.key(CONTACTS),
        check_name="no_failed_operations",
        passed=failed == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"failed": failed},
    )


def _removal_check(refused: str | None, deleted: int, names: SyncNames) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=names.key(CONTACTS),
        check_name="deletions_within_guards",
        passed=refused is None,
        severity=dg.AssetCheckSeverity.ERROR,
        description=refused,
        metadata={"deleted": deleted},
    )


Event = dg.AssetMaterialization | dg.AssetObservation | dg.AssetCheckResult


def build_sync_asset(names: SyncNames = DEFAULT) -> dg.AssetsDefinition:
    """The sync's one step, producing the five assets of ``names``."""

    @dg.multi_asset(
        name=names.name("sync_contacts"),
        specs=sync_specs(names),
        check_specs=sync_checks(names),
        can_subset=False,
        partitions_def=partitions_def(names),
        backfill_policy=dg.BackfillPolicy.single_run(),
        required_resource_keys=SyncResources.keys(names),
        description="CRM → normalize → dedupe → ErzyCall → audit, in one step for the run's "
        "groups.",
    )
    def sync_contacts(context: dg.AssetExecutionContext, config: SyncRunConfig) -> Iterator[Event]:
        yield from _sync(context, config, names, SyncResources.of(context, names))

    return sync_contacts


def _sync(
    context: dg.AssetExecutionContext,
    config: SyncRunConfig,
    names: SyncNames,
    resources: SyncResources,
) -> Iterator[Event]:
    crm, state, policy, erzycall = resources
    erzycall.check_usable()  # before anything is read or recorded: a bad setting costs nothing
    started = time.monotonic()
    store, scope, windows = state.store(), scope_for(context, names), erzycall.windows()
    keys = run_partition_keys(context)
    budget = _budget(config, policy)
    with sync_step(context) as stop, retried_on_infrastructure(context):
        store, account = bind_account(context, store, erzycall, state, stop, dry_run=False)
        extracted, prepared, scope = read_and_prepare(
            context,
            crm=crm,
            store=store,
            scope=scope,
            region=policy.default_region,
            stop=stop,
            replan_all=config.full_resync,
        )
        yield from _refuse_duplicates(keys, extracted, prepared, windows, policy, names)

        def progress(done: int, total: int, requests: int) -> None:
            if done % 100 == 0 or done == total:
                eta = format_duration(seconds_for_requests(total - done, windows))
                context.log.info(
                    f"progress: {done}/{total} operations, {requests} requests, ETA {eta}"
                )

        summary = execute_run(RunRequest(
            **prepared.sync_inputs(),
            store=store,
            client_factory=lambda sleep: erzycall.make_client(state.url, sleep=sleep),
            run_id=context.run_id,
            partition_key=scope.label,
            reconcile=config.full_resync,
            respect_deleted=policy.deleted_in_erzycall == "respect",
            removal=removal_for(policy, scope, extracted, store),
            budget=budget,
            on_progress=progress,
            stop=stop,
            send_slot=send_slot(context, store, stop, names.pool),
            account=account,
            ownership=policy.owner(extracted.managed_groups),
            lease_seconds=policy.lease_seconds,
            read_started=extracted.read_started.timestamp() if extracted.read_started else None,
        ))
        note_whole_read(store, context.run_id, scope, extracted, policy.max_deletion_share)
        figures = group_figures(
            keys,
            extracted.records,
            **prepared.parts(),
            skipped=[op.contact for op in summary.plan.skipped],
            results=summary.report.results,
        )
        totals = events.run_totals(
            summary, scope.label, extracted, prepared, budget, windows, store, started
        )
        yield from _report(figures, extracted, prepared, summary, totals, windows, policy, names)
        _end(context, summary)


def _refuse_duplicates(
    keys: list[str],
    extracted: Extracted,
    prepared: Prepared,
    windows: tuple[RateWindow, ...],
    policy: SyncPolicyResource,
    names: SyncNames,
) -> Iterator[Event]:
    """Two deduped contacts holding one phone would be two ErzyCall contacts for one number:
    the run reports what it read, fails no_duplicate_phones, and sends nothing."""
    duplicated = duplicate_phones(prepared.contacts)
    if not duplicated:
        return
    figures = group_figures(keys, extracted.records, **prepared.parts())
    yield from events.partition_events(
        figures, extracted, windows=windows, keys=SYNC_KEYS[:3], names=names
    )
    yield reject_rate_check(prepared, policy.reject_rate_warn, names)
    yield _duplicates_check(duplicated, names)
    raise dg.Failure(
        description=f"{len(duplicated)} phone(s) are held by two deduped contacts "
        "(no_duplicate_phones failed); nothing was sent.",
        allow_retries=False,
    )


def _report(
    figures: dict[str, GroupFigures],
    extracted: Extracted,
    prepared: Prepared,
    summary: RunSummary,
    totals: events.RunTotals,
    windows: tuple[RateWindow, ...],
    policy: SyncPolicyResource,
    names: SyncNames,
) -> Iterator[Event]:
    """The run's events and checks. A run that could not finish sending reports what it did,
    but does not mark the ErzyCall side of its partitions as materialized: they show as failed."""
    report = summary.report
    complete = not (report.aborted or report.stopped)
    yield from events.partition_events(
        figures, extracted, windows=windows, keys=SYNC_KEYS[:3], names=names
    )
    yield from events.partition_events(
        figures, extracted, windows=windows, keys=SYNC_KEYS[3:], observe=not complete, names=names
    )
    yield events.run_observation(totals, windows, names)
    yield reject_rate_check(prepared, policy.reject_rate_warn, names)
    yield _duplicates_check([], names)
    yield _failed_check(summary.counts["failed"], names)
    yield _removal_check(report.removal_refused, summary.counts["deleted"], names)


def _end(context: dg.AssetExecutionContext, summary: RunSummary) -> None:
    """Raise what ended the run early, saying what to check; warn when the key's budget is
    spent. A run that finished returns."""
    report = summary.report
    if report.stopped:
        raise SyncStopped(report.stopped)
    if report.budget_frees_at is not None:
        context.log.warning(budget_spent_message(report.budget_frees_at, summary.counts))
    if report.misconfigured:
        raise dg.Failure(
            description=f"Sync stopped: {report.aborted}. Several contacts in a row answered "
            "404: ERZYCALL_BASE_URL (or a proxy in front of it) or ERZYCALL_API_KEY probably "
            "points somewhere else. Nothing was forgotten; what was not tried is deferred.",
            allow_retries=False,
        )
    if report.api_unavailable:
        raise dg.Failure(
            description=f"Sync stopped: the ErzyCall API is unavailable ({report.aborted})."
            " What was not tried is deferred and goes first next run. Check "
            "ERZYCALL_BASE_URL and the API's status.",
            allow_retries=False,
        )
    if report.aborted:
        raise dg.Failure(
            description=f"Sync stopped: the API refused the key ({report.aborted}). "
            "Check ERZYCALL_API_KEY and its scopes (contacts:read, contacts:write).",
            allow_retries=False,
        )


sync_contacts = build_sync_asset()
"""The environment-variable sync's step (``definitions.py``)."""
