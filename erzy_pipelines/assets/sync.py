"""The upsert and the audit: the two assets that talk to ErzyCall and report what happened."""

from collections import Counter

import dagster as dg
import pandas as pd
from sqlalchemy import exc as sa_exc

from erzy_pipelines.assets import frames
from erzy_pipelines.assets.contacts import COMMON
from erzy_pipelines.assets.markdown import md_counts, md_table
from erzy_pipelines.core.budget import format_duration, requests_within, seconds_for_requests
from erzy_pipelines.crm.state import RUN_COUNT_FIELDS
from erzy_pipelines.erzycall import errors
from erzy_pipelines.partitions import scope_for
from erzy_pipelines.resources import (
    ErzyCallResource,
    SyncPolicyResource,
    SyncStateResource,
)
from erzy_pipelines.sync_run import run_sync
from erzy_pipelines.upsert import Budget

STEP_RETRIES = 2
STEP_RETRY_SECONDS = 5

AUDIT_COLUMNS = (
    "run_id",
    "partition_key",
    "crm_ids",
    "phone",
    "action",
    "outcome",
    "http_status",
    "error_code",
    "error_message",
    "attempts",
    "remote_id",
    "payload_hash",
    "created_at",
)
AUDIT_SCHEMA = dg.TableSchema(columns=[dg.TableColumn(c) for c in AUDIT_COLUMNS])
OPERATIONS_SCHEMA = dg.TableSchema(columns=AUDIT_SCHEMA.columns[:-1])


class SyncRunConfig(dg.Config):
    """Per-run choices, settable in the launchpad or with `erzy-pipelines sync` flags."""

    dry_run: bool = False
    """Plan only: count and list what would be sent, send nothing."""
    full_resync: bool = False
    """Ignore stored hashes: list ErzyCall (one request per 100 contacts) and fix any drift."""
    max_requests: int = 0
    """Most requests this run may spend (0 = ERZY_MAX_REQUESTS_PER_RUN)."""
    max_run_seconds: float = 0.0
    """Longest this run may send for (0 = ERZY_MAX_RUN_SECONDS)."""


def _budget(config: SyncRunConfig, policy: SyncPolicyResource) -> Budget:
    requests = config.max_requests or policy.max_requests_per_run
    seconds = config.max_run_seconds or policy.max_run_seconds
    return Budget(max_requests=requests or None, max_seconds=seconds or None)


@dg.asset(
    description="Upserts the deduped contacts into ErzyCall: unchanged → no request, new → POST, "
    "changed → PATCH of the changed fields, each with an idempotency key; every outcome is "
    "committed to the state database as soon as it is known.",
    kinds={"api"},
    pool="erzycall_api",
    check_specs=[dg.AssetCheckSpec("no_failed_operations", asset="erzycall_contacts")],
    **COMMON,
)
def erzycall_contacts(
    context: dg.AssetExecutionContext,
    config: SyncRunConfig,
    normalized_contacts: pd.DataFrame,
    deduped_contacts: pd.DataFrame,
    erzycall: ErzyCallResource,
    state: SyncStateResource,
    policy: SyncPolicyResource,
):
    erzycall.check_config()  # before anything is recorded: a bad setting costs nothing
    scope = scope_for(context)
    store = state.store()
    windows = erzycall.windows()
    budget = _budget(config, policy)

    def progress(done: int, total: int, requests: int) -> None:
        if done % 100 == 0 or done == total:
            eta = format_duration(seconds_for_requests(total - done, windows))
            context.log.info(f"progress: {done}/{total} operations, {requests} requests, ETA {eta}")

    try:
        summary = run_sync(
            contacts=frames.contacts_from_frame(deduped_contacts),
            rejects=frames.rejects_from_frame(normalized_contacts)
            + frames.rejects_from_frame(deduped_contacts),
            merges=frames.merges_from_frame(deduped_contacts),
            store=store,
            client_factory=lambda: erzycall.make_client(state.url),
            run_id=context.run_id,
            partition_key=scope.label,
            dry_run=config.dry_run,
            reconcile=config.full_resync,
            budget=budget,
            on_progress=progress,
        )
    except (sa_exc.OperationalError, errors.TransportError) as exc:
        # Infrastructure, not data: retry the step with exponential backoff (5 s, 10 s). Safe
        # because every outcome is committed per contact and a retried intent reuses its key.
        wait = STEP_RETRY_SECONDS * 2**context.retry_number
        raise dg.RetryRequested(max_retries=STEP_RETRIES, seconds_to_wait=wait) from exc
    results = [r.audit_row(context.run_id, scope.label) for r in summary.report.results]
    df = frames.frame(results, AUDIT_COLUMNS[:-1])
    needed = summary.plan.requests_needed
    caps = [budget.max_requests]
    if budget.max_seconds:
        caps.append(requests_within(budget.max_seconds, windows))
    allowed = min((c for c in caps if c), default=None)
    backlog = store.backlog()
    yield dg.Output(
        df,
        metadata={
            "dagster/row_count": len(df),
            "dagster/column_schema": OPERATIONS_SCHEMA,
            "dry_run": summary.dry_run,
            "scope": scope.label,
            "requests_needed": needed,
            "requests_allowed": allowed if allowed is not None else "no cap",
            "requests_spent": summary.requests,
            "eta_at_limits": format_duration(seconds_for_requests(needed, windows)),
            "backlog": backlog,
            "backlog_eta": format_duration(seconds_for_requests(backlog, windows)),
            "operations_by_outcome": dg.MetadataValue.md(md_counts(summary.counts)),
            "operations": dg.MetadataValue.md(
                md_table(
                    results, ("phone", "action", "outcome", "http_status", "error_code", "attempts")
                )
            ),
        },
    )
    failed = summary.counts["failed"]
    yield dg.AssetCheckResult(
        check_name="no_failed_operations",
        passed=failed == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"failed": failed},
        description="Operations that failed this run (they are retried next run).",
    )
    if summary.report.api_unavailable:
        raise dg.Failure(
            description=f"Sync stopped: the ErzyCall API is unavailable ({summary.report.aborted})."
            " What was not tried is deferred and goes first next run. Check ERZYCALL_BASE_URL and"
            " the API's status.",
            allow_retries=False,
        )
    if summary.report.aborted:
        raise dg.Failure(
            description=f"Sync stopped: the API refused the key ({summary.report.aborted}). "
            "Check ERZYCALL_API_KEY and its scopes (contacts:read, contacts:write).",
            allow_retries=False,
        )


@dg.asset(
    description="The audit of this run: one row per operation, reject and merge, from the state "
    "database's erzy_sync_audit table (unchanged contacts are counted in erzy_sync_runs).",
    kinds={"table"},
    deps=["erzycall_contacts"],
    **COMMON,
)
def sync_audit(
    context: dg.AssetExecutionContext, state: SyncStateResource
) -> dg.Output[pd.DataFrame]:
    store = state.store()
    rows = store.audit_rows(run_id=context.run_id)
    df = frames.frame(rows, AUDIT_COLUMNS)
    run = next((r for r in store.runs(limit=50) if r["run_id"] == context.run_id), {})
    counts = {k: run.get(k) for k in RUN_COUNT_FIELDS if k != "planned"}
    return dg.Output(
        df,
        metadata={
            "dagster/row_count": len(df),
            "dagster/column_schema": AUDIT_SCHEMA,
            "run_counts": dg.MetadataValue.md(md_counts({k: v or 0 for k, v in counts.items()})),
            "outcomes": dg.MetadataValue.md(md_counts(Counter(r["outcome"] for r in rows), "rows")),
            "audit": dg.MetadataValue.md(
                md_table(
                    rows, ("phone", "crm_ids", "action", "outcome", "http_status", "error_code")
                )
            ),
        },
    )
