"""Small markdown tables for asset metadata previews (no extra dependency).

Previews live in Dagster's event log (and in Dagster+ when used), not in the user's own
database, so phone numbers and email addresses are masked there; full values are only in the
audit table and the asset values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from erzy_pipelines.erzycall.logutil import mask_email, mask_phone_text, mask_text

#: How each personal column is masked; ``custom_*`` columns (anything the user's SQL adds: a
#: second phone, an email, an address) are free text, masked like notes. Other columns are shown
#: as they are (ids, codes, dates).
MASKS = {
    "phone": mask_phone_text,
    "email": mask_email,
    "title": mask_text,  # a title may be the phone itself (title_from_phone) or hold one
    "notes": mask_text,
}


def _cell(value: Any, column: str = "") -> str:
    if value is None:
        return ""
    if isinstance(value, tuple | list):
        value = ", ".join(map(str, value))
    text = str(value)
    mask = MASKS.get(column) or (mask_text if column.startswith("custom_") else None)
    if mask is not None and text:
        text = mask(text[:1000])
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= 80 else text[:77] + "..."


def md_table(
    rows: Iterable[Mapping[str, Any]],
    columns: Sequence[str],
    limit: int = 25,
    total: int | None = None,
) -> str:
    """A markdown table of at most ``limit`` rows, with a note when rows were left out
    (``total``: how many rows there are, when ``rows`` holds only the first ones)."""
    rows = list(rows)
    total = len(rows) if total is None else total
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(r.get(c), c) for c in columns) + " |" for r in rows[:limit]]
    if total > limit:
        lines.append(f"\n_{total - limit} more rows not shown._")
    if not rows:
        lines.append("| " + " | ".join("" for _ in columns) + " |")
    return "\n".join(lines)

