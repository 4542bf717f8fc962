"""The first three assets: extract from the CRM, normalize, dedupe. Glue only; logic is in core/."""

import json
import warnings
from collections import Counter

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from erzy_pipelines.assets import frames
from erzy_pipelines.assets.markdown import md_counts, md_table
from erzy_pipelines.core.dedupe import dedupe
from erzy_pipelines.core.normalize import Contact, normalize_row, normalize_rows
from erzy_pipelines.crm.state import contact_state as contact_state_table
from erzy_pipelines.partitions import SyncScope, crm_groups_partitions, scope_for
from erzy_pipelines.resources import CrmDatabaseResource, SyncPolicyResource, SyncStateResource

# backfill_policy is marked beta; single-run backfills are what make one request per change
# possible across groups, so we use it knowingly and keep the console quiet about it.
warnings.filterwarnings("ignore", category=dg.BetaWarning)

GROUP = "erzycall_sync"
COMMON = dict(
    partitions_def=crm_groups_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name=GROUP,
    io_manager_key="frames_io_manager",
)

NORMALIZED_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("crm_id", "string", description="the CRM row this came from"),
        dg.TableColumn("phone", "string", description="E.164"),
        dg.TableColumn("title", "string"),
        dg.TableColumn("email", "string"),
        dg.TableColumn("notes", "string"),
        dg.TableColumn("tags", "list[string]"),
        dg.TableColumn("group_ids", "list[string]", description="ErzyCall group ids"),
        dg.TableColumn("group_keys", "list[string]", description="CRM group keys"),
        dg.TableColumn("custom_fields", "list[(name, value)]"),
        dg.TableColumn("warnings", "list[string]", description="what normalization changed"),
        dg.TableColumn("reject_reason", "string", description="why it cannot be sent, else null"),
        dg.TableColumn("reject_detail", "string"),
    ]
)


DEDUPED_SCHEMA = dg.TableSchema(
    columns=[
        *(c for c in NORMALIZED_SCHEMA.columns if c.name != "crm_id"),
        dg.TableColumn(
            "crm_ids", "list[string]", description="every CRM record merged, survivor first"
        ),
        dg.TableColumn("merged_crm_ids", "list[string]", description="the records merged into it"),
    ]
)


def raw_schema(columns: list[str]) -> dg.TableSchema:
    """The user's query decides crm_contacts' columns; describe the ones this package reads."""
    known = {
        "crm_id": "stable id of the CRM record",
        "phone": "as typed in the CRM",
        "tags": "comma-separated",
        "country": "ISO region for this row's phone",
        "group_keys": "all the contact's CRM groups",
        "group_ids": "their ErzyCall group ids",
    }
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                c,
                description=known.get(c)
                or ("becomes customFields" if c.startswith("custom_") else None),
            )
            for c in columns
        ]
    )


def _stranded_crm_ids(state: SyncStateResource, group_ids: set[str]) -> set[str]:
    """CRM ids last sent with one of these ErzyCall groups: if one left the group in the CRM,
    it must still be synced in this group's run so that ErzyCall drops the membership."""
    if not group_ids:
        return set()
    # ContactState (the planner's view) has no crm_ids: read the two columns needed directly.
    c = contact_state_table.c
    query = sa.select(c.last_payload, c.crm_ids).where(c.last_payload.is_not(None))
    out: set[str] = set()
    with state.store().engine.connect() as conn:
        for payload, crm_ids in conn.execute(query):
            if set(json.loads(payload).get("groupIds") or ()) & group_ids:
                out.update(json.loads(crm_ids or "[]"))
    return out


def _in_scope(row: dict, scope: SyncScope, extra: set[str]) -> bool:
    if scope.groups is None or row["crm_id"] in extra:
        return True
    keys = row["group_keys"]
    return bool(scope.groups.intersection(keys)) if keys else scope.include_ungrouped


def _same_phone_rows(selected: list[dict], others: list[dict], region: str) -> list[dict]:
    """Records outside the scope whose phone is one of the selected records' phones.

    Dedupe merges every record of a phone into one contact; a group run that saw only its own
    record would send that record's fields and groups alone, and two groups holding duplicates
    would overwrite each other on every run.
    """
    if not others:
        return []

    def phone(row: dict) -> str | None:
        result = normalize_row(row, region)
        return result.phone if isinstance(result, Contact) else None

    phones = {p for p in map(phone, selected) if p}
    return [row for row in others if phone(row) in phones]


@dg.asset(
    description="Raw contacts of the selected CRM groups (all their memberships attached), plus "
    "records that share a phone with one of them or were last sent with one of the groups, "
    "read with the user's SQL in chunks.",
    kinds={"sql"},
    **COMMON,
)
def crm_contacts(
    context: dg.AssetExecutionContext,
    crm: CrmDatabaseResource,
    state: SyncStateResource,
    policy: SyncPolicyResource,
) -> dg.Output[pd.DataFrame]:
    scope = scope_for(context)
    engine = crm.engine()
    extra: set[str] = set()
    if scope.groups is not None:
        memberships = crm.memberships(engine)
        group_ids = {
            gid for rows in memberships.values() for key, gid in rows if key in scope.groups and gid
        }
        extra = _stranded_crm_ids(state, group_ids)
    rows: list[dict] = []
    others: list[dict] = []  # a group run's out-of-scope rows, until their phones are known
    for chunk in crm.contact_chunks(engine):
        for row in chunk:
            (rows if _in_scope(row, scope, extra) else others).append(row)
        context.log.debug(f"extracted {len(rows) + len(others)} rows")
    same_phone = _same_phone_rows(rows, others, policy.default_region)
    rows += same_phone
    columns = (
        list(rows[0].keys()) if rows else ["crm_id", "title", "phone", "group_keys", "group_ids"]
    )
    df = frames.frame(rows, columns)
    return dg.Output(
        df,
        metadata={
            "dagster/row_count": len(df),
            "dagster/column_schema": raw_schema(columns),
            "scope": scope.label,
            "stranded_contacts_included": len(extra),
            "same_phone_records_included": len(same_phone),
            "preview": dg.MetadataValue.md(md_table(rows[:10], columns[:8], limit=10)),
        },
    )


@dg.asset(
    description="One row per CRM contact: E.164 phone, cleaned fields within API limits, or a "
    "reject reason. Rejected rows never cost a request.",
    kinds={"python"},
    check_specs=[dg.AssetCheckSpec("reject_rate_below_threshold", asset="normalized_contacts")],
    **COMMON,
)
def normalized_contacts(
    context: dg.AssetExecutionContext, crm_contacts: pd.DataFrame, policy: SyncPolicyResource
):
    contacts, rejects = normalize_rows(frames.records(crm_contacts), policy.default_region)
    df = frames.normalized_frame(contacts, rejects)
    reasons = Counter(r.reason for r in rejects)
    warnings = Counter(w for c in contacts for w in c.warnings)
    yield dg.Output(
        df,
        metadata={
            "dagster/row_count": len(df),
            "dagster/column_schema": NORMALIZED_SCHEMA,
            "accepted": len(contacts),
            "rejected": len(rejects),
            "rejects_by_reason": dg.MetadataValue.md(md_counts(reasons, "rows")),
            "changes_by_kind": dg.MetadataValue.md(md_counts(warnings, "rows")),
            "rejects": dg.MetadataValue.md(
                md_table(
                    frames.records(frames.rejected(df)),
                    ("crm_id", "phone", "reject_reason", "reject_detail"),
                )
            ),
        },
    )
    total = len(contacts) + len(rejects)
    rate = len(rejects) / total if total else 0.0
    yield dg.AssetCheckResult(
        check_name="reject_rate_below_threshold",
        passed=rate <= policy.reject_rate_warn,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"reject_rate": round(rate, 4), "threshold": policy.reject_rate_warn},
        description="Share of CRM rows that cannot be sent (ERZY_REJECT_RATE_WARN).",
    )


@dg.asset(
    description="One contact per phone: the most recently updated CRM record wins scalar fields, "
    "tags and groups are unioned. Blocked from syncing if a phone is still duplicated.",
    kinds={"python"},
    check_specs=[
        dg.AssetCheckSpec("no_duplicate_phones", asset="deduped_contacts", blocking=True),
    ],
    **COMMON,
)
def deduped_contacts(context: dg.AssetExecutionContext, normalized_contacts: pd.DataFrame):
    contacts, merges, rejects = dedupe(frames.contacts_from_frame(normalized_contacts))
    df = frames.deduped_frame(contacts, merges, rejects)
    yield dg.Output(
        df,
        metadata={
            "dagster/row_count": len(df),
            "dagster/column_schema": DEDUPED_SCHEMA,
            "contacts": len(contacts),
            "merged_records": len(merges),
            "rejected_after_merge": len(rejects),
            "merges": dg.MetadataValue.md(
                md_table(
                    (
                        {"phone": m.phone, "kept": m.survivor_crm_id, "merged": m.merged_crm_id}
                        for m in merges
                    ),
                    ("phone", "kept", "merged"),
                )
            ),
        },
    )
    duplicated = frames.duplicate_phones(df)
    yield dg.AssetCheckResult(
        check_name="no_duplicate_phones",
        passed=not duplicated,
        metadata={"duplicated_phones": len(duplicated)},
        description="ErzyCall allows one contact per phone; nothing is sent while this fails.",
    )
