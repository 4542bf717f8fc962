
"""Dagster resources: thin, configurable wrappers that build the real objects.

Every field is filled from an environment variable through ``dg.EnvVar`` in ``definitions.py``;
the objects themselves (client, engine, state store) live in Dagster-free modules.
"""

import contextlib
import functools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine

from erzy_pipelines.core.budget import RateWindow, parse_rate_limits
from erzy_pipelines.core.key_id import key_id
from erzy_pipelines.core.ownership import Ownership
from erzy_pipelines.crm.extract import (
    CrmConnectionError,
    Membership,
    QueryShapeError,
    create_crm_engine,
    iter_contact_chunks,
    load_memberships,
    raw_contact_batches,
    read_sql_file,
)
from erzy_pipelines.demo import DEMO_API_KEY
from erzy_pipelines.erzycall import ErzyCallClient, RateLimiter, validate_base_url
from erzy_pipelines.erzycall.retry import RetryPolicy
from erzy_pipelines.settings import DEFAULTS, REAL_API_BASE_URL
from erzy_pipelines.state import StateStore
from erzy_pipelines.state.credentials import normalize_base_url
from erzy_pipelines.state.rate_budget import SqlRateLimitStore
from erzy_pipelines.sync.accounts import Credential


class ErzyCallResource(dg.ConfigurableResource):
    """The Contacts API: key, base URL and the key's rate-limit plan."""

    api_key: str
    base_url: str = DEFAULTS.base_url
    rate_limits: str = DEFAULTS.rate_limits
    allow_insecure_http: bool = DEFAULTS.allow_insecure_http
    timeout_seconds: float = DEFAULTS.timeout_seconds

    def __repr__(self) -> str:  # the key must never reach a repr, a log or the UI
        return f"ErzyCallResource(base_url={self.base_url!r}, api_key=<redacted>)"

    __str__ = __repr__

    def windows(self) -> tuple[RateWindow, ...]:
        try:
            return parse_rate_limits(self.rate_limits)
        except ValueError as exc:  # the message says what to fix
            raise dg.Failure(f"rate limits: {exc}", allow_retries=False) from None

    def check_config(self) -> None:
        """Fail fast, before anything is sent or recorded, on settings that cannot work.

        A misconfiguration is raised as ``dg.Failure`` so the UI and the CLI show what to fix,
        naming the variable, instead of a stack trace.
        """
        self.windows()
        try:
            validate_base_url(self.base_url, allow_insecure_http=self.allow_insecure_http)
        except ValueError as exc:
            raise dg.Failure(
                f"ERZYCALL_BASE_URL is not usable: {exc}. Use an https:// URL (plain http:// is "
                "only allowed to localhost, or with ERZYCALL_ALLOW_INSECURE_HTTP=true).",
                allow_retries=False,
            ) from None

    def key_id(self) -> str:
        """A stable, non-reversible id of the key: names its budget and account in the state DB."""
        return key_id(self.api_key)

    def credential(self, namespace: str = "") -> Credential:
        """The base URL and key id the state's account is recognized by (``sync/accounts.py``): in
        a named sync's namespace, the key is known by a hash of the name and the key."""
        kid = key_id(f"{namespace}\0{self.api_key}") if namespace else self.key_id()
        return Credential(normalize_base_url(self.base_url), kid, namespace)

    def check_usable(self) -> None:
        """Fail fast on the one misconfiguration that would otherwise cost a 401."""
        self.check_config()
        if self.api_key == DEMO_API_KEY and self.base_url.rstrip("/") == REAL_API_BASE_URL:
            raise dg.Failure(
                "ERZYCALL_API_KEY is not set: the demo key only works with the local sandbox. "
                "Set ERZYCALL_API_KEY to your key, or ERZYCALL_BASE_URL to a sandbox "
                "(`erzy-pipelines sandbox`)."
            )

    def make_client(
        self, shared_budget_url: str | None, sleep: Callable[[float], None] = time.sleep
    ) -> ErzyCallClient:
        """A client whose rate limiter shares this key's budget through the state database.

        ``sleep`` is used for every wait (the limiter, retry backoff): a stoppable sleep lets a
        run stop within a second while it waits for its turn.
        """
        self.check_usable()
        windows = self.windows()
        # A pause the API imposes beyond what the client would wait on retries means the key's
        # budget is spent elsewhere: the run defers instead of sleeping it out.
        pause = RetryPolicy().max_total_wait
        if shared_budget_url:
            store = SqlRateLimitStore(shared_budget_url, key_id=self.key_id())
            limiter = RateLimiter(
                windows=windows, store=store, clock=time.time, sleep=sleep, max_server_pause=pause
            )
        else:
            limiter = RateLimiter(windows=windows, sleep=sleep, max_server_pause=pause)
        return ErzyCallClient(
            api_key=self.api_key,
            base_url=self.base_url,
            limiter=limiter,
            timeout=self.timeout_seconds,
            allow_insecure_http=self.allow_insecure_http,
            sleep=sleep,
        )


class CrmDatabaseResource(dg.ConfigurableResource):
    """The user's CRM: a SQLAlchemy URL and two SQL files that return canonical columns."""

    url: str
    contacts_sql_path: str
    memberships_sql_path: str
    chunk_size: int = 10_000

    def engine(self) -> Engine:
        try:
            return create_crm_engine(self.url)
        except CrmConnectionError as exc:  # the message shows the URL with the password hidden
            raise dg.Failure(f"{exc} (check CRM_DATABASE_URL)", allow_retries=False) from None

    def contacts_sql(self) -> str:
        return _sql_file(self.contacts_sql_path, "CRM_CONTACTS_SQL")

    def memberships_sql(self) -> str:
        return _sql_file(self.memberships_sql_path, "CRM_MEMBERSHIPS_SQL")

    def memberships(self, engine: Engine) -> dict[str, tuple[Membership, ...]]:
        """crm_id -> [(group_key, erzycall_group_id)]; query problems raised as ``dg.Failure``."""
        sql = self.memberships_sql()
        with _query_errors(memberships=sql):
            return load_memberships(engine, sql)

    def contact_chunks(self, engine: Engine, **kwargs: object) -> Iterator[list[dict]]:
        """:func:`iter_contact_chunks` with this resource's queries and chunk size; a query of
        the wrong shape, or one the database refuses, is raised as ``dg.Failure`` naming it."""
        contacts, memberships = self.contacts_sql(), self.memberships_sql()
        with _query_errors(memberships=memberships):
            yield from iter_contact_chunks(
                engine, contacts, memberships, chunk_size=self.chunk_size, **kwargs
            )


    def raw_batches(self, engine: Engine, **kwargs: Any) -> Iterator[tuple[list[str], Any]]:
        """:func:`raw_contact_batches` of the contacts query (raw rows, for fingerprinting);
        query problems raised as ``dg.Failure`` naming the query."""
        contacts, memberships = self.contacts_sql(), self.memberships_sql()
        with _query_errors(memberships=memberships):
            yield from raw_contact_batches(engine, contacts, **kwargs)


def _sql_file(path: str, variable: str) -> str:
    try:
        return read_sql_file(Path(path))
    except (OSError, QueryShapeError) as exc:
        raise dg.Failure(f"{variable}: {exc}", allow_retries=False) from None


@contextlib.contextmanager
def _query_errors(*, memberships: str) -> Iterator[None]:
    """Turn the CRM's answer to a bad query into a message that says which query to fix."""
    try:
        yield
    except QueryShapeError as exc:  # already names the file and the missing column
        which = "CRM_MEMBERSHIPS_SQL" if str(exc).startswith("memberships") else "CRM_CONTACTS_SQL"
        raise dg.Failure(f"{exc} (fix the query {which} points at)", allow_retries=False) from None
    except CrmConnectionError as exc:
        raise dg.Failure(f"{exc} (check CRM_DATABASE_URL)", allow_retries=False) from None
    except sa_exc.DBAPIError as exc:
        if exc.connection_invalidated:
            raise  # the connection dropped: infrastructure, not the query
        which = (
            "CRM_MEMBERSHIPS_SQL"
            if str(exc.statement or "").strip() == memberships.strip()
            else "CRM_CONTACTS_SQL"
        )
        detail = " ".join(str(exc.orig or exc).split())[:500]
        raise dg.Failure(
            f"the CRM database refused the query in {which}: {detail}", allow_retries=False
        ) from None


@functools.lru_cache(maxsize=8)
def _state_store(url: str) -> StateStore:
    """One store (engine, pool, table check) per URL and process, shared by the assets."""
    return StateStore(url)


class SyncStateResource(dg.ConfigurableResource):
    """Where sync state, the audit and the shared rate-limit budget live; ``namespace`` keeps
    one sync's state apart from another's in the same database (``orchestration/names.py``)."""

    url: str
    namespace: str = ""

    def store(self) -> StateStore:
        return _state_store(self.url)


class SyncPolicyResource(dg.ConfigurableResource):
    """Normalization and budget settings that are the same for every run."""

    # What each means and accepts: settings.SyncConfig, where the defaults come from.
    default_region: str = DEFAULTS.default_region
    max_requests_per_run: int = DEFAULTS.max_requests_per_run
    max_run_seconds: float = DEFAULTS.max_run_seconds
    reject_rate_warn: float = DEFAULTS.reject_rate_warn
    ownership: str = DEFAULTS.ownership
    deleted_in_erzycall: str = DEFAULTS.deleted_in_erzycall
    delete_removed: bool = DEFAULTS.delete_removed
    max_deletions_per_run: int = DEFAULTS.max_deletions_per_run
    max_deletion_share: float = DEFAULTS.max_deletion_share
    lease_seconds: float = DEFAULTS.lease_seconds

    def owner(self, managed_groups: frozenset[str]) -> Ownership:
        """How writes treat what ErzyCall's users added, for a CRM mapping these groups."""
        return Ownership(merge=self.ownership == "merge", managed_groups=managed_groups)
