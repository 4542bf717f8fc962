"""Contact and group endpoints over real HTTP: CRUD, validation limits, filters, pagination."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from erzy_pipelines.sandbox import DEMO_GROUPS, SandboxServer

from .helpers import api, contact_body


def error_of(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert error["code"] == code
    return error


def details_fields(resp: httpx.Response) -> set[str]:
    error = error_of(resp, 400, "VALIDATION_ERROR")
    assert error["message"]
    assert all(d["message"] for d in error["details"])
    return {d["field"] for d in error["details"]}


def test_create_returns_the_full_contact_and_get_reads_it(client: httpx.Client) -> None:
    body = contact_body(
        1,
        email="ann@example.com",
        notes="n",
        tags=["a", "b"],
        groupIds=["grp_vip", "grp_trial"],
        customFields={"company": "Acme"},
    )
    resp = client.post("/contacts", json=body)
    assert resp.status_code == 201
    created = resp.json()["data"]
    assert created["id"].startswith("contact_")
    assert created["createdAt"].endswith("Z")
    assert created["optedOut"] is False
    assert {k: created[k] for k in body} == body
    assert client.get(f"/contacts/{created['id']}").json() == {"data": created}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"phone": "+14155550001"}, "title"),
        ({"title": "", "phone": "+14155550001"}, "title"),
        ({"title": "   ", "phone": "+14155550001"}, "title"),
        ({"title": "x" * 201, "phone": "+14155550001"}, "title"),
        ({"title": "T"}, "phone"),
        ({"title": "T", "phone": "4155550001"}, "phone"),
        ({"title": "T", "phone": "+04155550001"}, "phone"),
        ({"title": "T", "phone": "+1415555000123456"}, "phone"),
        ({"title": "T", "phone": "+1 415 555 0001"}, "phone"),
        (contact_body(email="not-an-email"), "email"),
        (contact_body(notes="x" * 5001), "notes"),
        (contact_body(tags=[f"t{i}" for i in range(21)]), "tags"),
        (contact_body(tags=["x" * 51]), "tags"),
        (contact_body(tags="vip"), "tags"),
        (contact_body(groupIds=[g for g, _ in DEMO_GROUPS] * 3), "groupIds"),
        (contact_body(groupIds=["grp_vip", "grp_nope"]), "groupIds"),
        (contact_body(customFields=["a"]), "customFields"),
        (contact_body(tags=None), "tags"),
        (contact_body(nickname="Jo"), "nickname"),
        (contact_body(optedOut=False), "optedOut"),
    ],
)
def test_create_validation_limits(client: httpx.Client, body: dict[str, Any], field: str) -> None:
    resp = client.post("/contacts", json=body)
    assert field in details_fields(resp)
    assert client.get("/contacts").json()["data"] == []


def test_limits_are_inclusive(client: httpx.Client) -> None:
    body = contact_body(
        title="x" * 200,
        notes="n" * 5000,
        tags=[f"{i:02d}" + "t" * 48 for i in range(20)],
        groupIds=[g for g, _ in DEMO_GROUPS],
        phone="+123456789012345",
    )
    resp = client.post("/contacts", json=body)
    assert resp.status_code == 201, resp.text
    assert len(resp.json()["data"]["tags"]) == 20


def test_every_problem_is_reported_at_once(client: httpx.Client) -> None:
    resp = client.post("/contacts", json={"title": "", "phone": "123", "bogus": 1})
    assert details_fields(resp) == {"title", "phone", "bogus"}


def test_invalid_json_and_non_object_bodies(client: httpx.Client) -> None:
    headers = {"Content-Type": "application/json"}
    error_of(client.post("/contacts", content=b"{not json", headers=headers), 400, "INVALID_JSON")
    error_of(client.post("/contacts", content=b"", headers=headers), 400, "INVALID_JSON")
    error_of(client.post("/contacts", content=b"\xff\xfe", headers=headers), 400, "INVALID_JSON")
    assert details_fields(client.post("/contacts", json=["a"])) == {"body"}
    cid = client.post("/contacts", json=contact_body()).json()["data"]["id"]
    error_of(client.patch(f"/contacts/{cid}", content=b"[1,", headers=headers), 400, "INVALID_JSON")


@pytest.mark.parametrize("bad_id", ["456", "contact_", "contact_ABC", "user_1", "contact_a-b"])
def test_malformed_ids_are_invalid_id(client: httpx.Client, bad_id: str) -> None:
    error_of(client.get(f"/contacts/{bad_id}"), 400, "INVALID_ID")
    error_of(client.patch(f"/contacts/{bad_id}", json={"title": "x"}), 400, "INVALID_ID")
    error_of(client.delete(f"/contacts/{bad_id}"), 400, "INVALID_ID")


def test_missing_contacts_are_404(client: httpx.Client) -> None:
    missing = "contact_0123456789abcdef"
    error_of(client.get(f"/contacts/{missing}"), 404, "NOT_FOUND")
    error_of(client.patch(f"/contacts/{missing}", json={"title": "x"}), 404, "NOT_FOUND")
    error_of(client.delete(f"/contacts/{missing}"), 404, "NOT_FOUND")
    error_of(client.get("/no-such-thing"), 404, "NOT_FOUND")


def test_patch_changes_only_sent_fields_and_replaces_lists(client: httpx.Client) -> None:
    body = contact_body(email="a@example.com", notes="old", tags=["a", "b"], groupIds=["grp_vip"])
    body["customFields"] = {"x": "1", "y": "2"}
    cid = client.post("/contacts", json=body).json()["data"]["id"]
    resp = client.patch(
        f"/contacts/{cid}",
        json={"tags": ["c"], "groupIds": ["grp_trial", "grp_events"], "customFields": {"z": "3"}},
    )
    assert resp.status_code == 200
    got = resp.json()["data"]
    assert got["tags"] == ["c"]
    assert got["groupIds"] == ["grp_trial", "grp_events"]
    assert got["customFields"] == {"z": "3"}
    assert (got["title"], got["email"], got["notes"]) == (body["title"], "a@example.com", "old")

    cleared = client.patch(
        f"/contacts/{cid}", json={"email": None, "notes": None, "tags": [], "groupIds": []}
    ).json()["data"]
    assert (cleared["email"], cleared["notes"], cleared["tags"], cleared["groupIds"]) == (
        None,
        None,
        [],
        [],
    )
    assert client.get(f"/contacts/{cid}").json()["data"] == cleared
    assert client.patch(f"/contacts/{cid}", json={}).json()["data"] == cleared


def test_patch_validation(client: httpx.Client) -> None:
    cid = client.post("/contacts", json=contact_body()).json()["data"]["id"]
    assert details_fields(client.patch(f"/contacts/{cid}", json={"title": None})) == {"title"}
    assert details_fields(client.patch(f"/contacts/{cid}", json={"phone": "0"})) == {"phone"}
    assert details_fields(client.patch(f"/contacts/{cid}", json={"groupIds": ["g"]})) == {
        "groupIds"
    }
    assert details_fields(client.patch(f"/contacts/{cid}", json={"id": "contact_1"})) == {"id"}


def test_duplicate_phone_conflicts_on_create_and_patch(client: httpx.Client) -> None:
    first = client.post("/contacts", json=contact_body(1)).json()["data"]
    second = client.post("/contacts", json=contact_body(2)).json()["data"]
    error = error_of(client.post("/contacts", json=contact_body(1, title="Other")), 409, "CONFLICT")
    assert first["id"] not in error["message"]  # the 409 does not name the existing contact

    error_of(
        client.patch(f"/contacts/{second['id']}", json={"phone": first["phone"]}), 409, "CONFLICT"
    )
    assert client.get(f"/contacts/{second['id']}").json()["data"]["phone"] == second["phone"]
    # Patching a contact's phone to its own phone is not a conflict.
    resp = client.patch(f"/contacts/{first['id']}", json={"phone": first["phone"]})
    assert resp.status_code == 200
    # A deleted contact frees its phone.
    assert client.delete(f"/contacts/{first['id']}").status_code == 204
    assert client.post("/contacts", json=contact_body(1)).status_code == 201


def test_pagination_walks_every_contact_once(client: httpx.Client, srv: SandboxServer) -> None:
    ids = [client.post("/contacts", json=contact_body(n)).json()["data"]["id"] for n in range(7)]
    seen: list[str] = []
    pages = []
    params: dict[str, Any] = {"limit": 3}
    while True:
        page = client.get("/contacts", params=params).json()
        pages.append(page)
        seen += [c["id"] for c in page["data"]]
        assert page["pagination"]["pageSize"] == 3
        if not page["pagination"]["hasMore"]:
            break
        params["cursor"] = page["pagination"]["cursor"]
    assert seen == ids  # creation order, no duplicates, nothing missed
    assert [len(p["data"]) for p in pages] == [3, 3, 1]
    assert [p["pagination"]["hasMore"] for p in pages] == [True, True, False]
    assert pages[-1]["pagination"]["cursor"]  # present on the last page too

    # A cursor stays valid when the contact it points at is deleted.
    assert client.delete(f"/contacts/{ids[2]}").status_code == 204
    after = client.get("/contacts", params={"limit": 3, "cursor": pages[0]["pagination"]["cursor"]})
    assert [c["id"] for c in after.json()["data"]] == ids[3:6]


def test_exact_page_boundary_and_empty_list(client: httpx.Client) -> None:
    empty = client.get("/contacts").json()
    assert empty == {"data": [], "pagination": {"cursor": None, "hasMore": False, "pageSize": 25}}
    for n in range(4):
        client.post("/contacts", json=contact_body(n))
    first = client.get("/contacts", params={"limit": 2}).json()
    second = client.get("/contacts", params={"limit": 2, "cursor": first["pagination"]["cursor"]})
    assert second.json()["pagination"]["hasMore"] is False
    assert len(second.json()["data"]) == 2


@pytest.mark.parametrize(
    "params", [{"limit": 0}, {"limit": 101}, {"limit": "ten"}, {"cursor": "!!"}, {"cursor": "eHl6"}]
)
def test_bad_list_parameters(client: httpx.Client, params: dict[str, Any]) -> None:
    assert details_fields(client.get("/contacts", params=params)) == set(params)


def test_search_and_filters(client: httpx.Client) -> None:
    ann = client.post(
        "/contacts",
        json={
            "title": "Ann Smith",
            "phone": "+14155550101",
            "tags": ["vip"],
            "groupIds": ["grp_vip"],
        },
    ).json()["data"]
    bob = client.post(
        "/contacts",
        json={"title": "Bob Jones", "phone": "+442071234567", "tags": ["lead", "vip"]},
    ).json()["data"]
    cat = client.post(
        "/contacts",
        json={"title": "Cat SMITHERS", "phone": "+14155550202", "groupIds": ["grp_trial"]},
    ).json()["data"]

    def listed(**params: Any) -> list[str]:
        resp = client.get("/contacts", params=params)
        assert resp.status_code == 200
        return [c["id"] for c in resp.json()["data"]]

    assert listed(search="smith") == [ann["id"], cat["id"]]
    assert listed(search="+14155550202") == [cat["id"]]
    assert listed(search="44207") == [bob["id"]]
    assert listed(search="zzz") == []
    assert listed(groupId="grp_vip") == [ann["id"]]
    assert listed(groupId="grp_unknown") == []
    assert listed(tags="vip") == [ann["id"], bob["id"]]
    assert listed(tags="lead,nothing") == [bob["id"]]
    assert listed(search="smith", groupId="grp_trial") == [cat["id"]]
    # An unencoded "+" arrives as a space; the phone is still found.
    raw = client.get("/contacts?search=+14155550101")
    assert [c["id"] for c in raw.json()["data"]] == [ann["id"]]

    found = client.get("/contacts/search", params={"q": "SMITH", "limit": 1}).json()
    assert found == {"data": [ann]}
    assert details_fields(client.get("/contacts/search", params={"q": "s"})) == {"q"}
    assert details_fields(client.get("/contacts/search", params={"q": "ab", "limit": 51})) == {
        "limit"
    }


def test_contact_groups_are_preloaded(client: httpx.Client) -> None:
    page = client.get("/contact-groups").json()
    assert [(g["id"], g["name"]) for g in page["data"]] == list(DEMO_GROUPS)
    assert all(g["createdAt"] for g in page["data"])
    assert page["pagination"]["hasMore"] is False
    first = client.get("/contact-groups", params={"limit": 4}).json()
    rest = client.get(
        "/contact-groups", params={"limit": 4, "cursor": first["pagination"]["cursor"]}
    ).json()
    assert first["pagination"]["hasMore"] is True
    assert [g["id"] for g in first["data"] + rest["data"]] == [g for g, _ in DEMO_GROUPS]


def test_custom_groups(start_sandbox: Any) -> None:
    srv = start_sandbox(groups=(("grp_a", "A"),))
    with api(srv) as c:
        assert [g["id"] for g in c.get("/contact-groups").json()["data"]] == ["grp_a"]
        assert details_fields(c.post("/contacts", json=contact_body(groupIds=["grp_vip"]))) == {
            "groupIds"
        }
        assert c.post("/contacts", json=contact_body(groupIds=["grp_a"])).status_code == 201
