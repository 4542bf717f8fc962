"""Typed, described column schemas of the five sync assets, for the Dagster UI."""

from __future__ import annotations

import dagster as dg

from erzy_pipelines.state import AUDIT_FIELDS


def _schema(*columns: tuple[str, str, str]) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[dg.TableColumn(name, kind, description=text) for name, kind, text in columns]
    )


CRM_KNOWN_COLUMNS = {
    "crm_id": ("string", "stable id of the CRM record"),
    "title": ("string", "the contact's name, as in the CRM"),
    "phone": ("string", "the phone number as typed in the CRM"),
    "email": ("string", "email address, as in the CRM"),
    "notes": ("string", "free text sent as the contact's notes"),
    "tags": ("string", "comma-separated tags"),
    "country": ("string", "ISO region for this row's phone (overrides ERZY_DEFAULT_REGION)"),
    "updated_at": ("datetime", "last change in the CRM; decides which duplicate wins"),
    "group_keys": ("list[string]", "all the contact's CRM groups (memberships query)"),
    "group_ids": ("list[string]", "the ErzyCall group ids those groups map to"),
}


def crm_schema(columns: list[str]) -> dg.TableSchema:
    """The user's query decides crm_contacts' columns; each one read is described."""
    out = []
    for name in columns:
        kind, text = CRM_KNOWN_COLUMNS.get(name, ("string", ""))
        if name.startswith("custom_"):
            text = f"sent as customFields[{name.removeprefix('custom_')!r}]"
        out.append((name, kind, text))
    return _schema(*out)


CRM_SCHEMA = crm_schema(list(CRM_KNOWN_COLUMNS))

NORMALIZED_SCHEMA = _schema(
    ("crm_id", "string", "the CRM record this row came from"),
    ("phone", "string", "E.164 phone (the raw value when the row was rejected)"),
    ("title", "string", "cleaned name, at most 200 characters"),
    ("email", "string", "cleaned email, or null if it was invalid"),
    ("notes", "string", "cleaned notes, at most 5,000 characters"),
    ("tags", "list[string]", "cleaned, de-duplicated tags, at most 20"),
    ("group_ids", "list[string]", "ErzyCall group ids of all the record's groups"),
    ("group_keys", "list[string]", "CRM group keys of all the record's groups"),
    ("custom_fields", "map[string,string]", "customFields to send"),
    ("warnings", "list[string]", "what normalization changed, as codes"),
    ("reject_reason", "string", "why the row cannot be sent (null when accepted)"),
    ("reject_detail", "string", "the reject in words"),
)

DEDUPED_SCHEMA = _schema(
    ("phone", "string", "E.164 phone: one contact per phone"),
    ("title", "string", "the survivor's name (most recently updated record)"),
    ("email", "string", "the survivor's email, else the next record's"),
    ("notes", "string", "the survivor's notes, else the next record's"),
    ("tags", "list[string]", "union of the records' tags, survivor first"),
    ("group_ids", "list[string]", "union of the records' ErzyCall groups"),
    ("group_keys", "list[string]", "union of the records' CRM groups"),
    ("custom_fields", "map[string,string]", "merged; the more recent record wins per key"),
    ("crm_ids", "list[string]", "every CRM record merged into this contact, survivor first"),
)

_AUDIT_COLUMNS = {
    "run_id": ("string", "the Dagster run that wrote the row"),
    "partition_key": ("string", "the run's groups ('all' for a full run)"),
    "crm_ids": ("string", "the CRM record(s) the row is about, comma-separated"),
    "phone": ("string", "E.164 phone (the raw value for a reject)"),
    "action": ("string", "create, update, reject, merge or skip"),
    "outcome": (
        "string",
        "created, updated, adopted, recreated, unchanged, merged, rejected, deferred, failed "
        "or planned",
    ),
    "http_status": ("int", "the API's HTTP status, null if nothing was sent"),
    "error_code": ("string", "the API's error code, or the reject/defer reason"),
    "error_message": ("string", "the error in words"),
    "attempts": ("int", "HTTP requests spent on the operation (retries included)"),
    "remote_id": ("string", "the ErzyCall contact id"),
    "payload_hash": ("string", "sha256 of the payload sent"),
    "created_at": ("datetime", "when the row was written (UTC)"),
}
AUDIT_SCHEMA = _schema(*((name, *_AUDIT_COLUMNS[name]) for name in AUDIT_FIELDS))
OPERATIONS_SCHEMA = _schema(
    *((n, *_AUDIT_COLUMNS[n]) for n in AUDIT_FIELDS if n not in ("run_id", "created_at"))
)
