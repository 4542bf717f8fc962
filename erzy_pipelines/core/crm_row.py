"""A raw contacts-query row as the row dict normalization takes.

Kept apart from ``crm/extract.py`` (which needs SQLAlchemy) because the normalizing worker
processes build these dicts themselves: the run hands them raw rows, which are cheaper to send.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

Membership = tuple[str, str | None]
"""(group_key, ErzyCall group id or None): one CRM group a contact belongs to."""


def as_datetime(value: Any) -> Any:
    """SQLite hands DATETIME columns back as text to a raw query; give them back as datetimes."""
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.strip())
        except ValueError:
            return value
    return value


def to_record(
    cols: Sequence[str], row: Sequence[Any], crm_id: str | None, member_of: Sequence[Membership]
) -> dict[str, Any]:
    """The row dict of one record: canonical columns, ``crm_id`` as text, ``updated_at`` as a
    datetime, plus ``group_keys`` (sorted, all of the contact's CRM groups) and ``group_ids``
    (sorted unique ErzyCall ids of those groups)."""
    record = dict(zip(cols, row, strict=True))
    record["crm_id"] = crm_id
    if "updated_at" in record:
        record["updated_at"] = as_datetime(record["updated_at"])
    record["group_keys"] = sorted({key for key, _ in member_of})
    record["group_ids"] = sorted({gid for _, gid in member_of if gid is not None})
    return record
