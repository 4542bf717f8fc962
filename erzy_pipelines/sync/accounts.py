"""Which ErzyCall account a run's state describes.

The state database keeps contact state per *account* (an ErzyCall organization). The API has
no "who am I" call, so an account is recognized by what it holds:

- A credential — the API base URL and the key (by its hash, never the key) — seen before
  belongs to the account it was seen with: no request is made.
- A new credential (a rotated key, another base URL for the same organization, another
  organization, a second sandbox) is *probed*: for each account already in the database that
  has contacts (most recently used first, at most ``MAX_ACCOUNTS_PROBED``), up to
  ``PROBES_PER_ACCOUNT`` of its most recently confirmed contacts are fetched by id
  (``GET /contacts/{id}``). One that is there with the same phone proves the organization is
  the same: the credential joins that account and its state is used. Otherwise the credential
  starts an account of its own, with empty state, so nothing is ever taken as "unchanged" in an
  account that does not hold it. A key rotation costs one request, a new organization at most
  ``MAX_ACCOUNTS_PROBED × PROBES_PER_ACCOUNT``.
- State written before accounts existed (``LEGACY_ACCOUNT``) is probed the same way and taken
  over by the first account it proves to describe.

A dry run sends nothing, so it cannot probe: with a new credential it plans against an empty
state (everything new) and says so.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from erzy_pipelines.core.key_id import key_id
from erzy_pipelines.erzycall import errors
from erzy_pipelines.state import LEGACY_ACCOUNT, StateStore
from erzy_pipelines.state.credentials import (
    adopt_legacy,
    candidates,
    known_account,
    normalize_base_url,
    register_credential,
)

MAX_ACCOUNTS_PROBED = 3
PROBES_PER_ACCOUNT = 3

#: GET /contacts/{id} → the contact's phone, or None when the API says it is not there (its own
#: 404 NOT_FOUND). Any other answer raises DoubtfulProbe.
Probe = Callable[[str], str | None]


class DoubtfulProbe(Exception):
    """The account probe got an answer that is not the API's: recognizing the account would be a
    guess, and a wrong guess splits an organization's state in two for good. The run fails,
    nothing is registered, and the next run probes again."""


@dataclass(frozen=True)
class Account:
    account_id: str
    known: bool  # the credential was seen with this account before (no request was made)
    probes: int = 0  # requests spent recognizing it
    note: str = ""  # what happened, for the run's log

    @property
    def new(self) -> bool:
        return not self.known and self.note.startswith("new")


def bound_store(url: str, base_url: str, api_key: str) -> StateStore:
    """The state database at ``url``, bound to the account this ErzyCall URL and key were seen
    with (for tools and tests that inspect what a sync left); unbound if never used."""
    store = StateStore(url)
    found = known_account(store, base_url, key_id(api_key), touch=False)
    return store.with_account(found, take_engine=True) if found is not None else store


def _holds(store: StateStore, account_id: str, probe: Probe) -> tuple[bool, int]:
    """(does the probed account hold this account's contacts?, requests spent)."""
    spent = 0
    for phone, remote_id in store.with_account(account_id).known_remote_ids(PROBES_PER_ACCOUNT):
        spent += 1
        if probe(remote_id) == phone:
            return True, spent
    return False, spent


def resolve_account(
    store: StateStore, base_url: str, key_id: str, probe: Probe, namespace: str = ""
) -> Account:
    """The account of this credential, probing the known accounts of its namespace if it is
    new (see module)."""
    url = normalize_base_url(base_url)
    found = known_account(store, url, key_id)
    if found is not None:
        return Account(found, known=True)
    spent = 0
    for candidate in candidates(store, namespace)[:MAX_ACCOUNTS_PROBED]:
        holds, used = _holds(store, candidate, probe)
        spent += used
        if not holds:
            continue
        if candidate == LEGACY_ACCOUNT:
            mine = uuid.uuid4().hex[:16]
            account_id = register_credential(
                store, url, key_id, mine, new=True, namespace=namespace
            )
            if account_id == mine:
                adopt_legacy(store, account_id)
            note = "the state kept before accounts existed was found in this account"
        else:
            account_id = register_credential(store, url, key_id, candidate, new=False)
            note = "a new key or URL of a known account (its contacts were found)"
        return Account(account_id, known=False, probes=spent, note=note)
    mine = uuid.uuid4().hex[:16]
    account_id = register_credential(store, url, key_id, mine, new=True, namespace=namespace)
    if account_id != mine:
        note = "a run started at the same time registered this key and URL first: its account"
        return Account(account_id, known=False, probes=spent, note=note)
    note = (
        "new account: none of the known accounts' contacts were found with this key and URL"
        if spent
        else "new account: the state database holds no contacts yet"
    )
    return Account(account_id, known=False, probes=spent, note=note)


def probe_with(client: object) -> Probe:
    """A probe that asks ``client`` (an ErzyCallClient) for a contact by id."""

    def probe(remote_id: str) -> str | None:
        try:
            return client.get_contact(remote_id).phone  # type: ignore[attr-defined]
        except errors.NotFoundError as exc:
            if exc.from_the_api:
                return None
            raise DoubtfulProbe(
                "recognizing the ErzyCall account of this key and URL: a stored contact was "
                f"answered {exc.status} without the API's NOT_FOUND error (a proxy's page or a "
                "wrong base path?). Nothing was decided; check ERZYCALL_BASE_URL and any proxy "
                "in front of it, then run again"
            ) from None
        except errors.ValidationError as exc:
            # The API's own 400 on the id (another account's id format: the sandbox's ids
            # asked of the real API) says it is not there; a 400 without its error code does
            # not come from the API.
            if exc.code:
                return None
            raise DoubtfulProbe(
                "recognizing the ErzyCall account of this key and URL: a stored contact was "
                "answered 400 without the API's error body. Nothing was decided; check "
                "ERZYCALL_BASE_URL and any proxy in front of it, then run again"
            ) from None

    return probe


@dataclass(frozen=True)
class Credential:
    """Where and as whom a run talks to ErzyCall: the base URL and a hash of the key, and the
    sync's state namespace (``names.py``). Two syncs never share state, even with one key:
    their CRM ids and what each created are their own. A named sync's key is known by a hash
    of its name and key, so each namespace recognizes its accounts on its own."""

    base_url: str
    key_id: str
    namespace: str = ""


UNVERIFIED = "unverified"
"""The account of a dry run whose credential was never seen: it cannot probe, so it plans
against an empty state (everything new)."""
UNVERIFIED_NOTE = (
    "this key and URL were never used with this state database, and a dry run sends nothing to "
    "find out whose account they open: the plan treats every contact as new; the first real "
    "run recognizes the account with a few GETs"
)


def unverified(namespace: str) -> str:
    """The provisional account of a dry run with a new credential, one per sync (namespace), so
    the record caches of two syncs' dry runs never evict each other."""
    if not namespace:
        return UNVERIFIED
    return f"{UNVERIFIED}-{hashlib.sha256(namespace.encode()).hexdigest()[:16]}"


def account_for_run(
    store: StateStore,
    credential: Credential,
    *,
    dry_run: bool,
    open_probe: Callable[[], AbstractContextManager[Probe]],
) -> Account:
    """The account a run's state is kept under. A known credential costs nothing; a new one is
    probed (``open_probe`` gives a probe for the duration) unless this is a dry run."""
    known = known_account(store, credential.base_url, credential.key_id)
    if known is not None:
        return Account(known, known=True)
    if dry_run:
        return Account(unverified(credential.namespace), known=False, note=UNVERIFIED_NOTE)
    with open_probe() as probe:
        return resolve_account(
            store, credential.base_url, credential.key_id, probe, credential.namespace
        )
