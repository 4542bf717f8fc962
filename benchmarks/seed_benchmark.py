"""How long seeding the sample CRM takes: a fresh SQLite file, 100,000 people by default.

python benchmarks/seed_benchmark.py [--rows N] [--seed S] [--url URL]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    try:
        from erzy_pipelines.crm.seed import seed_demo_crm
    except ImportError:  # run from a checkout without `pip install -e .`
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from erzy_pipelines.crm.seed import seed_demo_crm

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="people to seed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--url", help="seed this database instead of a fresh SQLite file")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="erzy-seed-bench-") as tmp:
        url = args.url or f"sqlite:///{Path(tmp) / 'bench_crm.sqlite'}"
        started = time.perf_counter()
        summary = seed_demo_crm(url, rows=args.rows, seed=args.seed)
        elapsed = time.perf_counter() - started
    rate = summary.people / elapsed if elapsed else float("inf")
    print(
        f"seeded {summary.people:,} people ({summary.phone_numbers:,} phone numbers, "
        f"{summary.memberships:,} memberships) into {summary.url.split(':')[0]} "
        f"in {elapsed:.2f} s = {rate:,.0f} rows/s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
