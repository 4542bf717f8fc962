"""The fault matrix's table: one row per scenario, printed once at the end of the session.

Rows are recorded *before* a scenario asserts, so a failing scenario still shows its figures
(with result FAIL). Negative controls — a scenario run with its guarantee switched off, which
must go red — get a second, smaller table.

With ``ERZY_FAULT_REPORT`` set (by the session, see conftest.py) rows are appended to that file,
so the table is whole when pytest-xdist runs the scenarios in several worker processes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

REPORT_ENV = "ERZY_FAULT_REPORT"


@dataclass(frozen=True)
class ScenarioRow:
    scenario: str
    faults: str
    requests: int
    expected: int
    present: int
    duplicated: int
    missing: int
    wrong: int
    audit: str
    result: str


@dataclass(frozen=True)
class ControlRow:
    scenario: str
    disabled: str
    found: str
    result: str


SCENARIOS: list[ScenarioRow] = []
CONTROLS: list[ControlRow] = []

_SCENARIO_HEAD = (
    "scenario",
    "faults injected",
    "requests",
    "expected",
    "present",
    "duplicated",
    "missing",
    "wrong",
    "audit",
    "result",
)
_CONTROL_HEAD = ("scenario", "guarantee disabled", "the checker found", "result")


def _sink() -> Path | None:
    path = os.environ.get(REPORT_ENV)
    return Path(path) if path else None


def _append(kind: str, row: ScenarioRow | ControlRow) -> None:
    sink = _sink()
    if sink is None:
        (SCENARIOS if kind == "scenario" else CONTROLS).append(row)  # type: ignore[arg-type]
        return
    with sink.open("a", encoding="utf-8") as fh:  # one short line: appends do not interleave
        fh.write(json.dumps({"kind": kind, **asdict(row)}) + "\n")


def record(row: ScenarioRow) -> None:
    _append("scenario", row)


def record_control(row: ControlRow) -> None:
    _append("control", row)


def _recorded() -> tuple[list[ScenarioRow], list[ControlRow]]:
    sink = _sink()
    if sink is None or not sink.exists():
        return SCENARIOS, CONTROLS
    scenarios, controls = [], []
    for line in sink.read_text(encoding="utf-8").splitlines():
        values = json.loads(line)
        kind = values.pop("kind")
        (scenarios.append(ScenarioRow(**values)) if kind == "scenario"
         else controls.append(ControlRow(**values)))
    return scenarios, controls


def _table(head: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(head)]
    numeric = [all(r[i].isdigit() for r in cells) for i in range(len(head))]

    def line(values: Sequence[str]) -> str:
        out = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(out).rstrip()

    return [line(head), line(["-" * w for w in widths]), *(line(r) for r in cells)]


def render() -> list[str]:
    """The tables as lines (empty when no fault scenario ran)."""
    lines: list[str] = []
    scenarios, controls = _recorded()
    if scenarios:
        rows = [
            (
                r.scenario,
                r.faults,
                r.requests,
                r.expected,
                r.present,
                r.duplicated,
                r.missing,
                r.wrong,
                r.audit,
                r.result,
            )
            for r in scenarios
        ]
        lines += _table(_SCENARIO_HEAD, rows)
    if controls:
        if lines:
            lines.append("")
        lines.append("negative controls (each guarantee switched off; the checker must go red):")
        rows = [(c.scenario, c.disabled, c.found, c.result) for c in controls]
        lines += _table(_CONTROL_HEAD, rows)
    return lines
