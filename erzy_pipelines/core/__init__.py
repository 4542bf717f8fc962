"""Pure sync logic: normalize CRM rows, dedupe by phone, build payloads, plan API writes.

No Dagster, HTTP or database imports here (stdlib and phonenumbers only), so every rule is
testable in isolation and the rules are documented in each module's docstring.
"""

from erzy_pipelines.core.dedupe import Merge, dedupe
from erzy_pipelines.core.normalize import (
    Contact,
    Reject,
    normalize_region,
    normalize_row,
    normalize_rows,
)
from erzy_pipelines.core.payload import (
    changed_fields,
    create_body,
    idempotency_key,
    payload_hash,
    to_payload,
)
from erzy_pipelines.core.plan import Action, ContactState, Operation, Plan, plan_operations

__all__ = [
    "Action",
    "Contact",
    "ContactState",
    "Merge",
    "Operation",
    "Plan",
    "Reject",
    "changed_fields",
    "create_body",
    "dedupe",
    "idempotency_key",
    "normalize_region",
    "normalize_row",
    "normalize_rows",
    "payload_hash",
    "plan_operations",
    "to_payload",
]
