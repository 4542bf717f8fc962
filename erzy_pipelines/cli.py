"""`erzy-pipelines`: the sandbox, the sample CRM, the sync (through Dagster), the demo and the UI.

``sync`` materializes the same assets the UI and the schedule run (``dg.materialize`` on the
instance in ``DAGSTER_HOME``), so every CLI run shows up in the UI with its metadata.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from erzy_pipelines.core.budget import (
    DEFAULT_RATE_LIMITS,
    DEFAULT_WINDOWS,
    format_duration,
    parse_rate_limits,
    seconds_for_requests,
)
from erzy_pipelines.core.urls import hide_password
from erzy_pipelines.erzycall.secret import Secret
from erzy_pipelines.orchestration.instance import INSTANCE_TEMPLATE, ensure_dagster_home
from erzy_pipelines.settings import (
    SettingError,
    apply_env_defaults,
    data_dir,
    env,
    settings,
)

__all__ = ["INSTANCE_TEMPLATE", "ensure_dagster_home", "main", "run_sync"]  # noqa: F822 (lazy)

DEMO_RATE_LIMITS = "3000/60,100000/3600"


def __getattr__(name: str) -> object:
    """``run_sync`` (``orchestration/launch.py``) on first use: ``--help``, ``seed`` and
    ``sandbox`` never pay for importing Dagster."""
    if name in ("run_sync", "print_summary"):
        from erzy_pipelines.orchestration import launch

        return getattr(launch, name)
    raise AttributeError(f"module 'erzy_pipelines.cli' has no attribute {name!r}")


def cmd_sync(args: argparse.Namespace) -> int:
    from erzy_pipelines.orchestration.launch import print_summary, run_sync

    groups = [g.strip() for g in args.groups.split(",") if g.strip()] if args.groups else None
    started = time.monotonic()
    code, summaries = run_sync(
        groups, dry_run=args.dry_run, full_resync=args.full_resync, max_requests=args.max_requests
    )
    if summaries:
        print_summary(summaries, args.dry_run)
        print(f"\nfinished in {time.monotonic() - started:.1f}s")
    return code


def cmd_sandbox(args: argparse.Namespace) -> int:
    from erzy_pipelines.sandbox import DEMO_GROUPS, SandboxConfig, serve_forever

    limits = parse_rate_limits(args.limits)
    extra = tuple(
        (group_id.strip(), (name or group_id).strip())
        for group_id, _, name in (g.partition("=") for g in (args.groups or "").split(","))
        if group_id.strip()
    )
    config = SandboxConfig(
        host=args.host, port=args.port, limits=limits, db_path=args.db, groups=DEMO_GROUPS + extra
    )
    serve_forever(config)
    return 0


def cmd_seed(args: argparse.Namespace) -> int:
    from erzy_pipelines.crm.seed import seed_demo_crm

    url = args.url or env("CRM_DATABASE_URL")
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    summary = seed_demo_crm(url, rows=args.rows, seed=args.seed)
    print(
        f"seeded {summary.people:,} people ({summary.phone_numbers:,} phone numbers, "
        f"{summary.groups} groups, {summary.memberships:,} memberships) into {summary.url} "
        f"in {time.monotonic() - started:.1f}s"
    )
    return 0


DEMO_SANDBOX_PORT = 8787


def _start_demo_sandbox(port: int = DEMO_SANDBOX_PORT):
    """The demo's sandbox, on the same port every time when it is free: the state database
    recognizes an ErzyCall account by its URL and key (a new port would cost a probe)."""
    from erzy_pipelines.sandbox import DEMO_API_KEY, SandboxConfig, SandboxServer

    limits = parse_rate_limits(DEMO_RATE_LIMITS)
    db_path = str(data_dir() / "demo_sandbox.sqlite")
    try:
        sandbox = SandboxServer(SandboxConfig(port=port, limits=limits, db_path=db_path)).start()
    except OSError:  # taken (a sandbox of yours?): any free port will do
        sandbox = SandboxServer(SandboxConfig(port=0, limits=limits, db_path=db_path)).start()
    os.environ.update(
        ERZYCALL_BASE_URL=sandbox.base_url,
        ERZYCALL_API_KEY=DEMO_API_KEY,
        ERZYCALL_RATE_LIMITS=DEMO_RATE_LIMITS,
    )
    return sandbox


def _prepare_demo_env() -> None:
    from erzy_pipelines.crm.seed import ensure_demo_crm

    data_dir().mkdir(parents=True, exist_ok=True)
    os.environ.setdefault(
        "ERZY_STATE_DATABASE_URL", f"sqlite:///{data_dir() / 'demo_state.sqlite'}"
    )
    apply_env_defaults()
    ensure_demo_crm(env("CRM_DATABASE_URL"))


def cmd_demo(args: argparse.Namespace) -> int:
    from erzy_pipelines.orchestration.launch import print_summary, run_sync

    _prepare_demo_env()
    sandbox = _start_demo_sandbox()
    print(
        f"sandbox API at {sandbox.base_url} (demo plan {DEMO_RATE_LIMITS}); "
        f"CRM {env('CRM_DATABASE_URL')}"
    )
    try:
        started = time.monotonic()
        code, summaries = run_sync(dry_run=args.dry_run)
    finally:
        sandbox.stop()
    print_summary(summaries, args.dry_run)
    requests = sum(s["requests"] for s in summaries)
    real = format_duration(seconds_for_requests(requests, DEFAULT_WINDOWS))
    print(
        f"\nfinished in {time.monotonic() - started:.1f}s; {requests} requests would take {real} "
        "at the real limits (60/min, 1,000/h)."
    )
    print("Run `make demo` again: an unchanged CRM costs 0 write requests.")
    return code


def cmd_dev(args: argparse.Namespace) -> int:
    _prepare_demo_env()
    sandbox = _start_demo_sandbox(port=args.sandbox_port)
    home = ensure_dagster_home()
    print(
        f"sandbox API at {sandbox.base_url}; DAGSTER_HOME={home}; "
        f"opening dagster dev on :{args.port}"
    )
    # Started from DAGSTER_HOME itself: dagster dev would otherwise warn that a dagster.yaml
    # in the current folder (a checkout's) "will not be used". Paths are absolute by now.
    os.environ["ERZY_DATA_DIR"] = str(data_dir())
    # dagster dev inherits an ignored SIGINT (a process started with `&` or by a parent that
    # ignores it) and would then never stop on the SIGINT forwarded below: reset it first.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    proc = subprocess.Popen(
        [
            sys.executable,
            # Dagster 1.13 marks `dagster dev` as superseded by `dg dev` (the dagster-dg-cli
            # package); it is what runs here, so the notice is noise for our users.
            "-W",
            "ignore:Function `dev_command` is superseded",
            "-m",
            "dagster",
            "dev",
            "-m",
            "erzy_pipelines.definitions",
            "-p",
            str(args.port),
        ],
        cwd=home,
    )
    # Pass a stop on to dagster dev (which stops its webserver and daemon) instead of orphaning it.
    signal.signal(signal.SIGTERM, lambda *_: proc.send_signal(signal.SIGINT))
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        return proc.wait()
    finally:
        sandbox.stop()


def cmd_baseline(args: argparse.Namespace) -> int:
    """Record what ErzyCall already holds for the CRM's contacts (see ``baseline.py``)."""
    import contextlib

    import dagster as dg

    from erzy_pipelines.core.scope import FULL_SCOPE
    from erzy_pipelines.orchestration.definitions import build_resources
    from erzy_pipelines.sync.accounts import DoubtfulProbe
    from erzy_pipelines.sync.baseline import baseline_rows
    from erzy_pipelines.sync.opening import open_account, read_crm
    from erzy_pipelines.sync.stop import StopSignal

    started = time.monotonic()
    stop = StopSignal()
    with dg.build_resources(build_resources()) as res, stop.on_signals():
        res.erzycall.check_usable()
        try:
            store, account = open_account(
                res.state.store(),
                res.erzycall.credential(),
                lambda: res.erzycall.make_client(res.state.url),
                dry_run=False,
            )
        except DoubtfulProbe as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        extracted, prepared, _ = read_crm(
            res.crm,
            store,
            scope_of=lambda _groups: FULL_SCOPE,
            region=res.policy.default_region,
            stop=stop,
            log=print,
            replan_all=True,
        )
        with contextlib.closing(res.erzycall.make_client(res.state.url)) as client:
            remote = list(client.list_contacts(limit=100))
            requests = client.requests_sent + account.probes
        known = set(store.load_states([c.phone for c in prepared.contacts]))
        rows, counts = baseline_rows(
            prepared.contacts,
            prepared.fingerprints,
            remote,
            res.policy.owner(extracted.managed_groups),
            known,
        )
        store.insert_baseline(rows)
    print(
        f"baseline of ErzyCall account {account.account_id}: {len(remote):,} contacts listed "
        f"in {requests:,} requests; of {len(prepared.contacts):,} CRM contacts, "
        f"{counts['settled']:,} hold what the sync would send (settled), {counts['differs']:,} "
        f"differ (next sync PATCHes them), {counts['missing']:,} are not in ErzyCall (next sync "
        f"creates them), {counts['known']:,} were already in the state (left alone); "
        f"{counts['only_in_erzycall']:,} ErzyCall contacts are not in the CRM (left alone). "
        f"{time.monotonic() - started:.1f}s"
    )
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    for setting in settings():
        value = os.environ.get(setting.name, setting.default)
        if setting.name == "ERZYCALL_API_KEY":
            value = repr(Secret(value))
        elif setting.name.endswith("_URL") and "://" in value:
            value = hide_password(value)
        print(f"{setting.name:30} {value}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="erzy-pipelines", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("sync", help="run the sync assets through Dagster and print a summary")
    p.add_argument("--dry-run", action="store_true", help="plan only; send nothing")
    p.add_argument("--groups", help="comma-separated CRM group keys (default: everything)")
    p.add_argument(
        "--full-resync", action="store_true", help="ignore stored hashes; list and fix drift"
    )
    p.add_argument("--max-requests", type=int, default=0, help="most requests this run may spend")
    p.set_defaults(func=cmd_sync)

    p = sub.add_parser(
        "baseline",
        help="record what ErzyCall already holds for your CRM's contacts (one listing, no "
        "writes), so the first sync sends only what differs",
    )
    p.set_defaults(func=cmd_baseline)

    p = sub.add_parser("sandbox", help="run the local ErzyCall sandbox API")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8787)
    p.add_argument("--db", default=None, help="SQLite file to persist contacts in")
    p.add_argument(
        "--limits", default=DEFAULT_RATE_LIMITS, help="rate-limit windows requests/seconds"
    )
    p.add_argument(
        "--groups",
        help="extra contact groups to preload, 'id=Name,...' (the sample CRM's are always there)",
    )
    p.set_defaults(func=cmd_sandbox)

    p = sub.add_parser("seed-demo-crm", help="create the messy sample CRM")
    p.add_argument("--url", default=None, help="SQLAlchemy URL (default: CRM_DATABASE_URL)")
    p.add_argument("--rows", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_seed)

    p = sub.add_parser(
        "demo", help="seed the sample CRM, start the sandbox, sync, print the summary"
    )
    p.add_argument("--dry-run", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("dev", help="open `dagster dev` on the demo defaults (sandbox + sample CRM)")
    p.add_argument("--port", type=int, default=3000)
    p.add_argument("--sandbox-port", type=int, default=8787)
    p.set_defaults(func=cmd_dev)

    p = sub.add_parser("config", help="print the effective settings (key redacted)")
    p.set_defaults(func=cmd_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SettingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
