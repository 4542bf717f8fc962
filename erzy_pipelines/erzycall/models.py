"""Typed, immutable views of API resources, parsed defensively from the JSON envelope."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .errors import UnexpectedResponseError

T = TypeVar("T")


def _require_str(data: Mapping[str, Any], key: str, what: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise UnexpectedResponseError(f"{what} without a {key!r} string")
    return value


def _opt_str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) else None


def _str_tuple(data: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = data.get(key)
    if not isinstance(value, list | tuple):
        return ()
    return tuple(v for v in value if isinstance(v, str))


@dataclass(frozen=True)
class RemoteContact:
    """A contact as the API returned it. ``custom_fields`` is excluded from hashing."""

    id: str
    title: str
    phone: str
    email: str | None = None
    notes: str | None = None
    tags: tuple[str, ...] = ()
    group_ids: tuple[str, ...] = ()
    custom_fields: dict[str, Any] = field(default_factory=dict, hash=False)
    opted_out: bool = False
    created_at: str | None = None

    @classmethod
    def from_api(cls, data: Any) -> RemoteContact:
        if not isinstance(data, Mapping):
            raise UnexpectedResponseError("contact is not a JSON object")
        custom = data.get("customFields")
        return cls(
            id=_require_str(data, "id", "contact"),
            title=_opt_str(data, "title") or "",
            phone=_require_str(data, "phone", "contact"),
            email=_opt_str(data, "email"),
            notes=_opt_str(data, "notes"),
            tags=_str_tuple(data, "tags"),
            group_ids=_str_tuple(data, "groupIds"),
            custom_fields=dict(custom) if isinstance(custom, Mapping) else {},
            opted_out=data.get("optedOut") is True,
            created_at=_opt_str(data, "createdAt"),
        )

    def as_payload(self) -> dict[str, Any]:
        """The writable fields in API shape (what a create/PATCH body would carry)."""
        return {
            "title": self.title,
            "phone": self.phone,
            "email": self.email,
            "notes": self.notes,
            "tags": list(self.tags),
            "groupIds": list(self.group_ids),
            "customFields": dict(self.custom_fields),
        }


@dataclass(frozen=True)
class ContactGroup:
    """A contact group (created in the dashboard; the API only lists them)."""

    id: str
    name: str
    created_at: str | None = None

    @classmethod
    def from_api(cls, data: Any) -> ContactGroup:
        if not isinstance(data, Mapping):
            raise UnexpectedResponseError("contact group is not a JSON object")
        return cls(
            id=_require_str(data, "id", "contact group"),
            name=_opt_str(data, "name") or "",
            created_at=_opt_str(data, "createdAt"),
        )


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a cursor-paginated list."""

    items: tuple[T, ...]
    cursor: str | None
    has_more: bool
    page_size: int | None = None

    @classmethod
    def from_api(cls, body: Any, parse: Callable[[Any], T]) -> Page[T]:
        if not isinstance(body, Mapping) or not isinstance(body.get("data"), list):
            raise UnexpectedResponseError("list response without a 'data' array")
        pagination = body.get("pagination")
        if pagination is None:
            pagination = {}
        if not isinstance(pagination, Mapping):
            raise UnexpectedResponseError("'pagination' is not an object")
        cursor = pagination.get("cursor")
        size = pagination.get("pageSize")
        return cls(
            items=tuple(parse(item) for item in body["data"]),
            cursor=cursor if isinstance(cursor, str) and cursor else None,
            # Absent hasMore means a single page (the groups list may not paginate at all).
            has_more=pagination.get("hasMore") is True,
            page_size=size if isinstance(size, int) else None,
        )
