"""Model parsing and the cursor paginator's stop/dedupe rules (scripted pages)."""

from __future__ import annotations

import json
from urllib.parse import parse_qs

import httpx
import pytest

from erzy_pipelines.erzycall import ContactGroup, Page, RemoteContact, errors

from ._fakes import FakeClock, Script, api_response, contact_json, make_client


def test_contact_from_api_is_tolerant_and_typed():
    c = RemoteContact.from_api({
        "id": "contact_9", "title": "Ada", "phone": "+4930123456", "email": None,
        "tags": ["vip", 3], "groupIds": ["grp_vip"], "customFields": {"crm": "42"},
        "optedOut": True, "createdAt": "2025-01-01T00:00:00Z", "unknownNewField": 1,
    })
    assert c == RemoteContact("contact_9", "Ada", "+4930123456", None, None, ("vip",), ("grp_vip",),
                        {"crm": "42"}, True, "2025-01-01T00:00:00Z")
    assert hash(c) == hash(RemoteContact.from_api(c.as_payload() | {"id": "contact_9",
                                                               "optedOut": True,
                                                               "createdAt": c.created_at}))
    with pytest.raises(AttributeError):
        c.title = "x"  # frozen
    assert c.as_payload()["groupIds"] == ["grp_vip"]


@pytest.mark.parametrize("bad", [None, [], {"title": "x"}, {"id": "contact_1"}])
def test_contact_without_id_or_phone_is_an_unexpected_response(bad):
    with pytest.raises(errors.UnexpectedResponseError):
        RemoteContact.from_api(bad)


def test_group_and_page_parsing():
    page = Page.from_api(
        {"data": [{"id": "grp_1", "name": "VIP", "createdAt": "t"}],
         "pagination": {"cursor": "abc", "hasMore": True, "pageSize": 1}},
        ContactGroup.from_api,
    )
    assert page == Page((ContactGroup("grp_1", "VIP", "t"),), "abc", True, 1)
    assert Page.from_api({"data": []}, ContactGroup.from_api).has_more is False
    with pytest.raises(errors.UnexpectedResponseError):
        Page.from_api({"items": []}, ContactGroup.from_api)


def paged(pages: list[tuple[list[dict], str | None, bool]]):
    """A handler serving ``pages`` by cursor ("" = first page), recording the query params."""
    seen: list[dict[str, list[str]]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        params = parse_qs(request.url.query.decode())
        seen.append(params)
        index = int(params.get("cursor", ["0"])[0])
        items, cursor, more = pages[index]
        return api_response(200, {"data": items,
                                  "pagination": {"cursor": cursor, "hasMore": more}})

    return handler, seen


def test_stops_on_has_more_false_even_with_a_cursor_and_dedupes():
    handler, seen = paged([
        ([contact_json("contact_1", "+1"), contact_json("contact_2", "+2")], "1", True),
        ([contact_json("contact_2", "+2"), contact_json("contact_3", "+3")], "2", True),
        ([contact_json("contact_4", "+4")], "3", False),  # cursor present on the last page
        ([contact_json("contact_X", "+9")], None, False),  # must never be fetched
    ])
    client = make_client(Script(handler), FakeClock())
    ids = [c.id for c in client.list_contacts(limit=2, tags=["vip", "b2b"], search="ad")]
    assert ids == ["contact_1", "contact_2", "contact_3", "contact_4"]
    assert len(seen) == 3 == client.requests_sent
    # Filters and limit are identical on every page; only the cursor changes.
    for params in seen:
        assert params["limit"] == ["2"] and params["tags"] == ["vip,b2b"]
        assert params["search"] == ["ad"] and "groupId" not in params
    assert [p.get("cursor") for p in seen] == [None, ["1"], ["2"]]


def test_pages_are_lazy():
    handler, seen = paged([([contact_json("contact_1")], "1", True),
                           ([contact_json("contact_2")], None, False)])
    client = make_client(Script(handler), FakeClock())
    pages = client.list_contact_pages(limit=1)
    first = next(pages)
    assert first.items[0].id == "contact_1" and first.has_more and len(seen) == 1


@pytest.mark.parametrize("cursor", [None, "0"])
def test_has_more_without_a_new_cursor_is_an_error_not_a_loop(cursor):
    handler, _ = paged([([contact_json("contact_1")], cursor, True)])
    client = make_client(Script(handler), FakeClock())
    with pytest.raises(errors.UnexpectedResponseError):
        list(client.list_contacts())


def test_find_by_phone_checks_exact_match_across_pages():
    handler, seen = paged([
        ([contact_json("contact_1", "+141555512345")], "1", True),  # superstring match only
        ([contact_json("contact_2", "+14155551234")], "2", True),
        ([contact_json("contact_3", "+1415555123456")], None, False),
    ])
    client = make_client(Script(handler), FakeClock())
    assert client.find_contact_by_phone("+14155551234").id == "contact_2"
    assert len(seen) == 2  # stopped once found
    assert seen[0]["search"] == ["+14155551234"]


def test_argument_checks_cost_no_request():
    client = make_client(Script(api_response(500, None)), FakeClock())
    with pytest.raises(ValueError):
        client.find_contact_by_phone("4155551234")
    with pytest.raises(ValueError):
        client.search_contacts("a")
    with pytest.raises(ValueError):
        list(client.list_contacts(limit=101))
    with pytest.raises(ValueError):
        client.get_contact("../contact-groups")
    with pytest.raises(ValueError):
        client.update_contact("contact_1", {}, "k")
    with pytest.raises(ValueError):
        client.create_contact({"title": "A"}, idempotency_key="")
    assert client.requests_sent == 0


def test_update_sends_only_the_given_fields_with_null_clears():
    script = Script(lambda r: api_response(200, {"data": contact_json()}))
    client = make_client(script, FakeClock())
    client.update_contact("contact_1", {"email": None, "tags": []}, "upd-1")
    req = script.requests[0]
    assert req.method == "PATCH" and req.url.path == "/api/v1/contacts/contact_1"
    assert json.loads(req.content) == {"email": None, "tags": []}
    assert req.headers["Content-Type"] == "application/json"
    assert req.headers["Idempotency-Key"] == "upd-1"
