"""Time extract, normalize, dedupe and plan on the sample CRM, and report peak memory. No API calls.

    .venv/bin/python benchmarks/pipeline_benchmark.py                 # 100,000 and 1,000,000 rows
    .venv/bin/python benchmarks/pipeline_benchmark.py --rows 100000

Each size runs in a fresh process so its peak RSS is its own. The CRM is seeded into a SQLite
file under the system temp folder (reused when it already has that many rows). Plan is measured
twice: against an empty state (everything is a create) and against a state that already holds
every contact (everything unchanged: the daily steady state).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _stage(name: str, started: float, results: dict[str, float]) -> float:
    now = time.perf_counter()
    results[name] = now - started
    return now


def run_one(rows: int) -> None:
    from erzy_pipelines.core.dedupe import dedupe
    from erzy_pipelines.core.normalize import normalize_rows
    from erzy_pipelines.core.payload import payload_hash, to_payload
    from erzy_pipelines.core.plan import ContactState, plan_operations
    from erzy_pipelines.crm.extract import create_crm_engine, iter_contact_chunks, read_sql_file
    from erzy_pipelines.crm.seed import ensure_demo_crm
    from erzy_pipelines.settings import SQL_DIR

    path = Path(tempfile.gettempdir()) / f"erzy_bench_crm_{rows}.sqlite"
    url = f"sqlite:///{path}"
    seeded = time.perf_counter()
    ensure_demo_crm(url, rows=rows, seed=1)
    seed_seconds = time.perf_counter() - seeded

    times: dict[str, float] = {}
    engine = create_crm_engine(url)
    t = time.perf_counter()
    extracted = [
        row
        for chunk in iter_contact_chunks(
            engine,
            read_sql_file(SQL_DIR / "contacts.sql"),
            read_sql_file(SQL_DIR / "memberships.sql"),
        )
        for row in chunk
    ]
    t = _stage("extract", t, times)
    contacts, rejects = normalize_rows(extracted, "US")
    t = _stage("normalize", t, times)
    deduped, merges, dedupe_rejects = dedupe(contacts)
    t = _stage("dedupe", t, times)
    plan = plan_operations(deduped, {})
    t = _stage("plan (all new)", t, times)
    states = {}
    for c in deduped:
        payload = to_payload(c)
        states[c.phone] = ContactState(
            phone=c.phone,
            remote_id="contact_x",
            last_payload=payload,
            last_hash=payload_hash(payload),
            last_outcome="created",
            rejected_hash=None,
            intent_seq=1,
            pending_hash=None,
            deferred=False,
            failure_count=0,
        )
    t = time.perf_counter()
    steady = plan_operations(deduped, states)
    _stage("plan (all unchanged)", t, times)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(
        f"\n{rows:,} CRM rows (seed/reuse {seed_seconds:.1f}s): {len(extracted):,} extracted, "
        f"{len(rejects):,} rejected, {len(merges):,} merged, {len(deduped):,} contacts"
    )
    for name, seconds in times.items():
        print(
            f"  {name:22} {seconds:8.2f} s   {len(extracted) / max(seconds, 1e-9):>12,.0f} rows/s"
        )
    print(
        f"  plan: {plan.requests_needed:,} requests when new, "
        f"{steady.requests_needed:,} when unchanged"
    )
    print(f"  peak memory (RSS)      {peak_mib:8.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, action="append", help="row count (repeatable)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        run_one(args.one)
        return
    for rows in args.rows or [100_000, 1_000_000]:
        subprocess.run([sys.executable, __file__, "--one", str(rows)], check=True)


if __name__ == "__main__":
    main()
