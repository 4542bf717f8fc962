"""The Dagster events a sync records: per partition, what it did for that group; once per run,
the run's totals.

A single run over many groups (the daily run, a backfill) used to copy the whole run's figures
onto every group's partition. Here each partition gets its own materialization (or, for a plan,
observation) whose figures describe that group (see ``core/group_figures.py``), and the run's
totals — requests needed, allowed and spent, ETA, backlog — are recorded once, as an
observation of ``erzycall_contacts`` without a partition. Every figure someone would chart is a
number; durations are seconds, with text beside them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg

from erzy_pipelines.core.budget import (
    RateWindow,
    format_duration,
    requests_within,
    seconds_for_requests,
)
from erzy_pipelines.core.group_figures import GroupFigures, record_partitions
from erzy_pipelines.core.outcomes import SENT_OUTCOMES, Outcome
from erzy_pipelines.orchestration.assets import schemas
from erzy_pipelines.orchestration.assets.markdown import md_table
from erzy_pipelines.orchestration.names import ASSETS, DEFAULT, SyncNames
from erzy_pipelines.state import StateStore
from erzy_pipelines.sync.prepare import Extracted, Prepared
from erzy_pipelines.sync.run import RunSummary
from erzy_pipelines.sync.send import Budget

CRM, NORMALIZED, DEDUPED, CONTACTS, AUDIT = ASSETS
SYNC_KEYS = ASSETS
OUTCOME_FIGURES = tuple(map(str, (*SENT_OUTCOMES, Outcome.FAILED, Outcome.DEFERRED)))

Event = dg.AssetMaterialization | dg.AssetObservation
PREVIEW_OPERATIONS = 25


def _seconds(name: str, seconds: float) -> dict[str, Any]:
    """A duration as a number to chart, and as text to read."""
    return {f"{name}_seconds": float(seconds), name: format_duration(seconds)}


def _counts_table(counts: Mapping[str, int], label: str) -> dg.TableMetadataValue:
    return dg.MetadataValue.table(
        records=[dg.TableRecord({label: k, "rows": int(v)}) for k, v in sorted(counts.items())],
        schema=dg.TableSchema(
            columns=[
                dg.TableColumn(label, "string", description=f"the {label}"),
                dg.TableColumn("rows", "int", description="how many"),
            ]
        ),
    )


def _rows_of(partition: str, rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [r for r in rows if partition in record_partitions(r.get("group_keys") or ())]


def group_metadata(
    partition: str,
    figures: GroupFigures,
    extracted: Extracted,
    *,
    windows: Sequence[RateWindow],
    planned: bool,
) -> dict[str, dict[str, Any]]:
    """asset key → metadata of one partition (one group) of each sync asset."""
    preview_rows = _rows_of(partition, extracted.preview)[:10]
    contacts: dict[str, Any] = {
        "dagster/row_count": figures.changed,
        "contacts": figures.contacts,
        "changed": figures.changed,
        "unchanged": figures.unchanged,
        "skipped_rejected_before": figures.skipped,
    }
    if planned:
        contacts["requests_needed"] = figures.changed
        contacts.update(_seconds("eta", seconds_for_requests(figures.changed, windows)))
    else:
        contacts["dagster/column_schema"] = schemas.OPERATIONS_SCHEMA
        contacts.update({name: figures.outcomes[name] for name in OUTCOME_FIGURES})
        contacts["sent"] = figures.sent
        contacts["requests"] = figures.requests
    return {
        CRM: {
            "dagster/row_count": figures.crm_records,
            "dagster/column_schema": schemas.crm_schema(extracted.columns),
            "preview": dg.MetadataValue.md(
                md_table(preview_rows, extracted.columns[:8], limit=10)
            ),
        },
        NORMALIZED: {
            "dagster/row_count": figures.accepted + figures.rejected,
            "dagster/column_schema": schemas.NORMALIZED_SCHEMA,
            "accepted": figures.accepted,
            "rejected": figures.rejected,
            "rejects_by_reason": _counts_table(figures.rejects_by_reason, "reason"),
        },
        DEDUPED: {
            "dagster/row_count": figures.contacts,
            "dagster/column_schema": schemas.DEDUPED_SCHEMA,
            "contacts": figures.contacts,
            "merged_records": figures.merged,
            "rejected_after_merge": figures.rejected_after_merge,
        },
        CONTACTS: contacts,
        AUDIT: {
            "dagster/row_count": figures.audit_rows,
            "dagster/column_schema": schemas.AUDIT_SCHEMA,
        },
    }


def partition_events(
    figures: Mapping[str, GroupFigures],
    extracted: Extracted,
    *,
    windows: Sequence[RateWindow],
    keys: Sequence[str] = SYNC_KEYS,
    planned: bool = False,
    observe: bool = False,
    names: SyncNames = DEFAULT,
) -> Iterator[Event]:
    """One event per (asset, partition), with the group's figures (its plan if ``planned``).

    Materializations by default; observations with ``observe`` — for a plan (a plan is not a
    materialization: no partition turns green, the audit is not replaced) and for a run that
    could not finish sending (its partitions show as failed, its figures are still there).
    """
    event = dg.AssetObservation if observe or planned else dg.AssetMaterialization
    for partition, group in figures.items():
        by_asset = group_metadata(partition, group, extracted, windows=windows, planned=planned)
        for key in keys:
            yield event(names.key(key), partition=partition, metadata=by_asset[key])


@dataclass
class RunTotals:
    """The run's own figures, recorded once."""

    scope: str
    planned: bool
    extracted: Extracted
    prepared: Prepared
    requests_needed: int
    requests_spent: int
    request_cap: int | None
    backlog: int
    counts: Mapping[str, int]
    duration_seconds: float
    results: Sequence[Mapping[str, Any]]  # the first operations, for a preview
    result_count: int = 0
    account: str = ""  # the ErzyCall account (state namespace) the run addressed
    budget_frees_at: float | None = None  # the key's budget was spent: when it frees (epoch)
    deletions: Sequence[Mapping[str, Any]] = ()  # removals planned or done (opt-in)
    removal_refused: str | None = None  # the removal's guards stopped it: why


def run_observation(
    totals: RunTotals, windows: Sequence[RateWindow], names: SyncNames = DEFAULT
) -> dg.AssetObservation:
    """The whole run's figures, once, on ``erzycall_contacts`` (no partition)."""
    cap = totals.request_cap
    allowed = min(cap, totals.requests_needed) if cap is not None else totals.requests_needed
    metadata: dict[str, Any] = {
        "scope": totals.scope,
        "plan_only": totals.planned,
        "erzycall_account": totals.account,
        "crm_records": len(totals.extracted.records),
        "records_normalized": totals.extracted.normalized,
        "records_gone": totals.extracted.vanished,
        "stranded_records_included": totals.extracted.stranded,
        "same_phone_records_included": totals.extracted.same_phone,
        "rejected": len(totals.prepared.all_rejects),
        "merged": len(totals.prepared.merges),
        "contacts": totals.prepared.contact_count,
        "contacts_settled": len(totals.prepared.settled),
        "requests_needed": totals.requests_needed,
        "request_cap": cap or 0,
        "requests_allowed": allowed,
        "requests_spent": totals.requests_spent,
        **_seconds("eta", seconds_for_requests(totals.requests_needed, windows)),
        "backlog": totals.backlog,
        **_seconds("backlog_eta", seconds_for_requests(totals.backlog, windows)),
        **{name: int(totals.counts.get(name, 0)) for name in totals.counts},
        "duration_seconds": round(totals.duration_seconds, 3),
        **_budget_spent(totals.budget_frees_at),
        **_removals(totals),
        "operations": dg.MetadataValue.md(
            md_table(
                totals.results,
                ("phone", "action", "outcome", "http_status", "error_code", "attempts"),
                limit=PREVIEW_OPERATIONS,
                total=totals.result_count,
            )
        ),
    }
    return dg.AssetObservation(names.key(CONTACTS), metadata=metadata)


def _removals(totals: RunTotals) -> dict[str, Any]:
    """The opt-in removal: what it deletes (or would, on a plan), or why it deleted nothing."""
    out: dict[str, Any] = {"deletions": len(totals.deletions)}
    if totals.deletions:
        out["deletions_list"] = dg.MetadataValue.md(
            md_table(
                totals.deletions,
                ("phone", "crm_ids", "remote_id", "outcome", "http_status"),
                limit=PREVIEW_OPERATIONS,
                total=len(totals.deletions),
            )
        )
    if totals.removal_refused:
        out["removal_refused"] = totals.removal_refused
    return out


def _budget_spent(frees_at: float | None) -> dict[str, Any]:
    """When the key's budget frees, if the API said it was spent (else nothing)."""
    if frees_at is None:
        return {}
    return {
        "key_budget_frees_at": dg.MetadataValue.timestamp(frees_at),
        **_seconds("key_budget_frees_in", max(0.0, frees_at - time.time())),
    }


def run_totals(
    summary: RunSummary,
    scope: str,
    extracted: Extracted,
    prepared: Prepared,
    budget: Budget,
    windows: Sequence[RateWindow],
    store: StateStore,
    started: float,
) -> RunTotals:
    caps = [c for c in (budget.max_requests,) if c]
    if budget.max_seconds:
        caps.append(requests_within(budget.max_seconds, windows))
    return RunTotals(
        scope=scope,
        planned=summary.dry_run,
        extracted=extracted,
        prepared=prepared,
        requests_needed=summary.plan.requests_needed,
        requests_spent=summary.requests,
        request_cap=min(caps) if caps else None,
        backlog=store.backlog(),
        account=summary.account.account_id if summary.account else "",
        budget_frees_at=summary.report.budget_frees_at,
        counts=summary.counts,
        duration_seconds=time.monotonic() - started,
        results=[r.audit_row("", scope) for r in summary.report.results[:PREVIEW_OPERATIONS]],
        result_count=len(summary.report.results),
        deletions=[
            r.audit_row("", scope) for r in summary.report.results if r.action == "delete"
        ],
        removal_refused=summary.report.removal_refused,
    )
