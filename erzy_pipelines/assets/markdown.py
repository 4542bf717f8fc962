"""Small markdown tables for asset metadata previews (no extra dependency)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, tuple | list):
        value = ", ".join(map(str, value))
    text = str(value).replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= 80 else text[:77] + "..."


def md_table(rows: Iterable[Mapping[str, Any]], columns: Sequence[str], limit: int = 25) -> str:
    """A markdown table of at most ``limit`` rows, with a note when rows were left out."""
    rows = list(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in rows[:limit]]
    if len(rows) > limit:
        lines.append(f"\n_{len(rows) - limit} more rows not shown._")
    if not rows:
        lines.append("| " + " | ".join("" for _ in columns) + " |")
    return "\n".join(lines)


def md_counts(counts: Mapping[str, int], title: str = "count") -> str:
    return md_table(({"what": k, title: v} for k, v in counts.items()), ("what", title), limit=100)
