"""Time `erzy-pipelines sync` end to end on the sample CRM at 100,000 and 1,000,000 rows.

    .venv/bin/python benchmarks/sync_benchmark.py                  # both sizes (make bench)
    .venv/bin/python benchmarks/sync_benchmark.py --rows 100000

Every figure is one real CLI run in its own process (Dagster, the CRM and state on SQLite, a
local sandbox over HTTP), its wall time and the peak RSS of its whole process tree (normalizing
workers included), sampled every 50 ms from /proc. Per size, in this order:

1. ``first run``: a new state, ``sync --dry-run`` (everything is new; plans every create);
2. ``baseline`` (set-up, not a goal): the sandbox's store is filled with exactly what the sync
   would send, then ``erzy-pipelines baseline`` records it from one listing — the documented way
   to start from what ErzyCall already holds, instead of hours of sandbox requests;
3. ``steady state``: ``sync`` with nothing changed (0 requests);
4. ``group backfill``: ``sync --groups bench_1k``, a 1,000-member group added at seeding;
5. ``1% changed``: 1% of the people renamed, then ``sync --dry-run`` (plan; sending excluded).

The goals are issue 10's for 1,000,000 rows; at 100,000 rows a tenth of them plus the start-up
cost, measured as a dry run over a 10-row CRM. The last line is ``bench: N/M goals met``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "erzy_pipelines.cli"]
GB = 1024**3
# (row, wall seconds, peak RSS bytes) at 1,000,000 rows
GOALS = {
    "steady state": (30.0, 1.5 * GB),
    "1% changed": (35.0, 1.5 * GB),
    "first run": (90.0, 2.0 * GB),
    "group backfill": (30.0, 1.5 * GB),  # at most the steady state's time
}
ORDER = ("steady state", "1% changed", "first run", "group backfill")
GROUP = "bench_1k"


def _tree_rss(pid: int) -> int:
    """RSS of ``pid`` and all its descendants, bytes (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [pid]
    page = os.sysconf("SC_PAGE_SIZE")
    while todo:
        current = todo.pop()
        with contextlib.suppress(OSError):  # it ended meanwhile
            total += int(Path(f"/proc/{current}/statm").read_text().split()[1]) * page
        todo += children.get(current, [])
    return total


def measure(args: list[str], env: dict[str, str], label: str) -> tuple[float, int, str]:
    """Run the CLI; (wall seconds, peak tree RSS, output)."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        CLI + args, env=env, cwd=env["BENCH_DIR"], stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss(proc.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    done.set()
    sampler.join()
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        print(out[-4000:])
        raise SystemExit(f"{label}: exit {proc.returncode}")
    print(f"  {label:<16} {wall:7.1f} s  {peak / GB:5.2f} GB")
    return wall, peak, out


def add_bench_group(crm_path: Path, members: int = 1000) -> None:
    """A CRM group of ``members`` people (every 97th person), mapped to an ErzyCall group."""
    from erzy_pipelines.sandbox import DEMO_GROUPS

    db = sqlite3.connect(crm_path)
    with db:
        if db.execute("SELECT 1 FROM crm_groups WHERE group_key = ?", (GROUP,)).fetchone():
            return
        gid = db.execute("SELECT max(id) + 1 FROM crm_groups").fetchone()[0]
        db.execute(
            "INSERT INTO crm_groups (id, group_key, name, erzycall_group_id) VALUES (?, ?, ?, ?)",
            (gid, GROUP, "Benchmark group", DEMO_GROUPS[0][0]),
        )
        query = "SELECT id FROM people WHERE id % 97 = 0 LIMIT ?"
        people = [r[0] for r in db.execute(query, (members,))]
        db.executemany(
            "INSERT INTO group_memberships (person_id, group_id) VALUES (?, ?)",
            [(p, gid) for p in people],
        )
    db.close()


def fill_sandbox(env: dict[str, str], sandbox_db: Path) -> int:
    """Write into the sandbox's store exactly what a sync would send for the CRM (computed
    from scratch, on both cores), as if an earlier tool had sent it."""
    code = f"""
import json, sqlite3, os, secrets
os.environ.update({json.dumps({k: v for k, v in env.items() if k.startswith(("CRM_", "ERZY"))})})
from erzy_pipelines.crm.extract import (create_crm_engine, load_memberships,
    raw_contact_batches, read_sql_file)
from erzy_pipelines.core.dedupe import dedupe
from erzy_pipelines.core.normalize import Contact
from erzy_pipelines.core.payload import to_payload
from erzy_pipelines.sync.prepare import normalize_many
from erzy_pipelines.sync.stop import StopSignal
from erzy_pipelines.settings import apply_env_defaults, env
apply_env_defaults()
engine = create_crm_engine(env("CRM_DATABASE_URL"))
memberships = load_memberships(engine, read_sql_file(env("CRM_MEMBERSHIPS_SQL")))
items = []
for cols, rows in raw_contact_batches(engine, read_sql_file(env("CRM_CONTACTS_SQL"))):
    i = cols.index("crm_id")
    for row in rows:
        crm_id = None if row[i] is None else str(row[i])
        items.append((tuple(row), crm_id, memberships.get(crm_id, ())))
results = normalize_many(cols, items, env("ERZY_DEFAULT_REGION"), StopSignal())
del items
contacts, _, _ = dedupe([r for r in results if isinstance(r, Contact)])
db = sqlite3.connect({str(sandbox_db)!r})
from erzy_pipelines.sandbox.contacts_db import SCHEMA
db.executescript(SCHEMA)
def body(c):
    p = to_payload(c)
    cid = "contact_" + secrets.token_hex(12)
    full = dict(id=cid, title=p["title"], phone=p["phone"], email=p.get("email"),
                notes=p.get("notes"), tags=p.get("tags") or [], groupIds=p.get("groupIds") or [],
                customFields=p.get("customFields") or {{}}, optedOut=False,
                createdAt="2026-01-01T00:00:00Z")
    return cid, p["phone"], json.dumps(full)
with db:
    db.executemany("INSERT INTO contacts (id, phone, body) VALUES (?, ?, ?)", map(body, contacts))
print(len(contacts))
"""
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    return int(out.stdout.split()[-1])


def start_sandbox(db_path: Path):
    from erzy_pipelines.sandbox import SandboxConfig, SandboxServer

    config = SandboxConfig(port=0, limits=((1_000_000, 1.0),), db_path=str(db_path))
    return SandboxServer(config).start()


def base_env(work: Path, crm: Path) -> dict[str, str]:
    from erzy_pipelines.sandbox import DEMO_API_KEY

    env = {k: v for k, v in os.environ.items() if not k.startswith(("ERZY", "CRM_", "DAGSTER"))}
    env.update(
        BENCH_DIR=str(work),
        DAGSTER_HOME=str(work / "dagster_home"),
        CRM_DATABASE_URL=f"sqlite:///{crm}",
        ERZY_STATE_DATABASE_URL=f"sqlite:///{work / 'state.sqlite'}",
        ERZYCALL_API_KEY=DEMO_API_KEY,
        ERZYCALL_ALLOW_INSECURE_HTTP="true",
        ERZYCALL_RATE_LIMITS="1000000/1",
        PYTHONPATH=str(ROOT),
    )
    return env


def startup_cost(root: Path) -> tuple[float, int]:
    """A dry run over a 10-row CRM: Dagster's and our fixed cost."""
    from erzy_pipelines.crm.seed import seed_demo_crm

    work = root / "startup"
    work.mkdir()
    crm = work / "crm.sqlite"
    seed_demo_crm(f"sqlite:///{crm}", rows=10, seed=1, replace=True)
    env = base_env(work, crm)
    sandbox = start_sandbox(work / "sandbox.sqlite")
    try:
        env["ERZYCALL_BASE_URL"] = sandbox.base_url
        measure(["sync", "--dry-run"], env, "warm-up")  # first Dagster start writes its storage
        wall, rss, _ = measure(["sync", "--dry-run"], env, "start-up")
    finally:
        sandbox.stop()
    return wall, rss


def bench_size(rows: int, root: Path) -> dict[str, tuple[float, int]]:
    from erzy_pipelines.crm.seed import ensure_demo_crm

    print(f"\n{rows:,} rows")
    crm = Path(tempfile.gettempdir()) / f"erzy_bench_crm_{rows}.sqlite"
    ensure_demo_crm(f"sqlite:///{crm}", rows=rows, seed=1)
    work_crm = root / f"crm_{rows}.sqlite"
    shutil.copy(crm, work_crm)  # the 1% edit must not touch the cached seed
    add_bench_group(work_crm)
    work = root / f"run_{rows}"
    work.mkdir()
    env = base_env(work, work_crm)
    results: dict[str, tuple[float, int]] = {}

    sandbox = start_sandbox(work / "sandbox.sqlite")
    env["ERZYCALL_BASE_URL"] = sandbox.base_url
    try:
        wall, rss, _ = measure(["sync", "--dry-run"], env, "first run")
        results["first run"] = (wall, rss)
    finally:
        sandbox.stop()

    t = time.perf_counter()
    filled = fill_sandbox(env, work / "sandbox.sqlite")
    print(f"  (sandbox filled with {filled:,} contacts in {time.perf_counter() - t:.1f} s)")
    sandbox = start_sandbox(work / "sandbox.sqlite")
    env["ERZYCALL_BASE_URL"] = sandbox.base_url
    try:
        _, _, out = measure(["baseline"], env, "baseline")
        print("   ", out.strip().splitlines()[-1][:300])
        wall, rss, out = measure(["sync"], env, "steady state")
        _expect_no_requests(out, "steady state")
        results["steady state"] = (wall, rss)
        wall, rss, out = measure(["sync", "--groups", GROUP], env, "group backfill")
        _expect_no_requests(out, "group backfill")
        results["group backfill"] = (wall, rss)
        db = sqlite3.connect(work_crm)
        with db:
            changed = db.execute(
                "UPDATE people SET display_name = display_name || ' (edited)' WHERE id % 100 = 0"
            ).rowcount
        db.close()
        wall, rss, out = measure(["sync", "--dry-run"], env, "1% changed")
        print(f"    ({changed:,} people renamed)")
        results["1% changed"] = (wall, rss)
    finally:
        sandbox.stop()
    return results


def _expect_no_requests(out: str, label: str) -> None:
    lines = [line for line in out.splitlines() if line.strip()]
    header = next((i for i, line in enumerate(lines) if line.split()[:1] == ["created"]), None)
    if header is None:
        return
    values = dict(zip(lines[header].split(), lines[header + 1].split(), strict=False))
    if values.get("requests") not in (None, "0"):
        raise SystemExit(f"{label}: expected 0 requests, the run spent {values['requests']}")


def report(sizes: dict[int, dict[str, tuple[float, int]]], startup: tuple[float, int]) -> None:
    print(f"\nstart-up (10-row CRM dry run): {startup[0]:.1f} s, {startup[1] / GB:.2f} GB\n")
    print(f"{'rows':>10}  {'run':<16} {'wall s':>8} {'goal s':>8} {'peak GB':>8} "
          f"{'goal GB':>8}  met")
    met = total = 0
    for rows, results in sizes.items():
        scale = rows / 1_000_000
        for name in ORDER:
            if name not in results:
                continue
            wall, rss = results[name]
            goal_wall, goal_rss = GOALS[name]
            if scale < 1:
                goal_wall = goal_wall * scale + startup[0]
                goal_rss = goal_rss * scale + startup[1]
            ok = wall <= goal_wall and rss <= goal_rss
            met += ok
            total += 1
            print(f"{rows:>10,}  {name:<16} {wall:8.1f} {goal_wall:8.1f} {rss / GB:8.2f} "
                  f"{goal_rss / GB:8.2f}  {'yes' if ok else 'NO'}")
    print(f"\nbench: {met}/{total} goals met")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, action="append", help="size(s) (default both)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    sizes = args.rows or [100_000, 1_000_000]
    root = Path(tempfile.mkdtemp(prefix="erzy_bench_"))
    try:
        startup = startup_cost(root)
        results = {rows: bench_size(rows, root) for rows in sizes}
        report(results, startup)
    finally:
        if args.keep:
            print(f"work folder: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
