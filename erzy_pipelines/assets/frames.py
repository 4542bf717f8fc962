"""Conversions between the core's dataclasses and the DataFrames the assets materialize.

Frames use ``object`` columns throughout: pandas 3 would otherwise turn ``None`` in text columns
into ``NaN``, and the core expects ``None``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Any

import pandas as pd

from erzy_pipelines.core.dedupe import Merge
from erzy_pipelines.core.normalize import Contact, Reject

CONTACT_FIELDS = tuple(f.name for f in dataclasses.fields(Contact))
REJECT_FIELDS = ("crm_id", "reason", "detail", "phone")


def _clean(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


def records(frame: pd.DataFrame) -> Iterable[dict[str, Any]]:
    """Rows as dicts with ``None`` for missing values."""
    columns = list(frame.columns)
    for row in frame.itertuples(index=False, name=None):
        yield {c: _clean(v) for c, v in zip(columns, row, strict=True)}


def frame(rows: list[dict[str, Any]], columns: Iterable[str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(columns), dtype=object)


def normalized_frame(contacts: list[Contact], rejects: list[Reject]) -> pd.DataFrame:
    """One row per CRM row: the normalized contact, or the reject with its reason."""
    rows = [
        {**dataclasses.asdict(c), "crm_id": c.crm_ids[0], "reject_reason": None} for c in contacts
    ]
    rows += [
        {"crm_id": r.crm_id, "phone": r.phone, "reject_reason": r.reason, "reject_detail": r.detail}
        for r in rejects
    ]
    return frame(rows, ("crm_id", *CONTACT_FIELDS, "reject_reason", "reject_detail"))


def deduped_frame(
    contacts: list[Contact], merges: list[Merge], rejects: list[Reject]
) -> pd.DataFrame:
    """One row per phone to send (with the CRM ids merged into it), plus dedupe rejects."""
    merged: dict[str, list[str]] = {}
    for merge in merges:
        merged.setdefault(merge.phone, []).append(merge.merged_crm_id)
    rows = [
        {
            **dataclasses.asdict(c),
            "merged_crm_ids": tuple(merged.get(c.phone, ())),
            "reject_reason": None,
        }
        for c in contacts
    ]
    rows += [
        {
            "crm_ids": (r.crm_id,),
            "phone": r.phone,
            "reject_reason": r.reason,
            "reject_detail": r.detail,
        }
        for r in rejects
    ]
    return frame(rows, (*CONTACT_FIELDS, "merged_crm_ids", "reject_reason", "reject_detail"))


def accepted(frame_: pd.DataFrame) -> pd.DataFrame:
    return frame_[frame_["reject_reason"].isna()]


def rejected(frame_: pd.DataFrame) -> pd.DataFrame:
    return frame_[frame_["reject_reason"].notna()]


def contacts_from_frame(frame_: pd.DataFrame) -> list[Contact]:
    return [Contact(**{f: row[f] for f in CONTACT_FIELDS}) for row in records(accepted(frame_))]


def rejects_from_frame(frame_: pd.DataFrame) -> list[Reject]:
    out = []
    for row in records(rejected(frame_)):
        crm_id = row.get("crm_id")
        if crm_id is None and row.get("crm_ids"):
            crm_id = ",".join(row["crm_ids"])
        out.append(
            Reject(
                crm_id=crm_id,
                reason=row["reject_reason"],
                detail=row["reject_detail"] or "",
                phone=row.get("phone"),
            )
        )
    return out


def merges_from_frame(frame_: pd.DataFrame) -> list[Merge]:
    out = []
    for row in records(accepted(frame_)):
        for merged_id in row["merged_crm_ids"] or ():
            out.append(
                Merge(
                    phone=row["phone"], survivor_crm_id=row["crm_ids"][0], merged_crm_id=merged_id
                )
            )
    return out


def duplicate_phones(frame_: pd.DataFrame) -> list[str]:
    """Phones held by more than one accepted row (what the blocking check looks for)."""
    phones = accepted(frame_)["phone"]
    return sorted(set(phones[phones.duplicated()]))
