"""The console's Audit page and its reprocess routes without a browser: filters and pages of
the audit trail, a dry run that changes nothing, a reprocess audited as the API's, and the
refusals (a viewer's 403, audited; a form without its CSRF token)."""

from __future__ import annotations

import re

import pytest

from tests.console.conftest import VIEWER, Console
from tests.console.seed import REPROCESSED, REPROCESSED_EMAIL
from tests.console.test_security import csrf_of, signed_in

RECORD = {"partition": "0", "offset": "0"}  # the record yesterday's code rejected
AUDITED = """SELECT actor, action, targets, outcome, detail FROM operator_audit
             ORDER BY id DESC LIMIT 1"""


def outcome_of_record(console: Console) -> str:
    row = console.db.execute('SELECT outcome FROM events WHERE "partition" = 0 AND "offset" = 0'
                             ).fetchone()
    assert row is not None
    return str(row[0])


def test_a_viewer_is_refused_a_reprocess_and_the_refusal_is_audited(console: Console) -> None:
    client = signed_in(console, VIEWER)
    event = client.get("/console/events/0/0").get_data(as_text=True)
    assert "Reprocess" not in event
    assert "Reprocess" not in client.get("/console/events?outcome=rejected").get_data(
        as_text=True)
    token = csrf_of(client, "/console/events")
    for path in ("/console/events/reprocess/preview", "/console/events/reprocess"):
        answer = client.post(path, data={**RECORD, "csrf_token": token})
        assert answer.status_code == 403
        assert "viewer" in answer.get_data(as_text=True)
        assert console.db.execute(AUDITED).fetchone()[:4] == (
            "viewer", "events.reprocess", [], "refused")
    assert outcome_of_record(console) == "rejected"


def test_a_reprocess_form_needs_its_csrf_token(console: Console) -> None:
    client = signed_in(console)
    for path in ("/console/events/reprocess/preview", "/console/events/reprocess"):
        assert client.post(path, data=RECORD).status_code == 400
        assert client.post(path, data={**RECORD, "csrf_token": "forged." + "A" * 40}
                           ).status_code == 400
    assert outcome_of_record(console) == "rejected"


@pytest.mark.parametrize(("form", "status", "says"), [
    ({"offset": "-1"}, 422, "offset"),
    ({"partition": "0"}, 422, "offset"),
    ({"offset": "0", "source": "bookings"}, 422, "not both"),
    ({}, 422, "rebuild"),
    ({"outcome": "lost"}, 422, "outcome"),
    ({"offset": "99999"}, 404, "has not been projected"),
    ({"source": "stripe", "outcome": "rejected"}, 409, "holds no record at offset"),
])
def test_a_bad_selection_is_named_and_audited_failed(console: Console, form: dict[str, str],
                                                     status: int, says: str) -> None:
    client = signed_in(console)
    answer = client.post("/console/events/reprocess/preview",
                         data={**form, "csrf_token": csrf_of(client, "/console/events")})
    assert answer.status_code == status
    assert says in answer.get_data(as_text=True)
    assert console.db.execute(AUDITED).fetchone()[1:4] == ("events.reprocess", [], "failed")


def test_a_filter_is_reprocessed_after_its_dry_run_shows_the_diff(console: Console) -> None:
    client = signed_in(console)
    events = client.get("/console/events?source=bookings&outcome=rejected"
                        "&received_after=2026-06-01T00:00:00Z").get_data(as_text=True)
    assert 'id="reprocess"' in events  # offered for a filter a selection can say
    assert 'id="reprocess"' not in client.get(
        "/console/events?subject=BK-1&outcome=rejected").get_data(as_text=True)
    answer = client.post("/console/events/reprocess/preview", data={
        "source": "bookings", "outcome": "rejected", "received_after": "2026-06-01T00:00:00Z",
        "csrf_token": csrf_of(client, "/console/events")})
    assert answer.status_code == 200
    page = answer.get_data(as_text=True)
    assert re.search(r"offset 0</a></td>\s*<td><span class=\"badge outcome-rejected\">rejected"
                     r"</span></td><td><span class=\"badge outcome-applied\">applied", page)
    assert REPROCESSED in page
    assert REPROCESSED_EMAIL in page
    assert 'id="reprocess-these"' in page
    assert outcome_of_record(console) == "rejected"
    actor, action, targets, outcome, detail = console.db.execute(AUDITED).fetchone()
    assert (actor, action, targets, outcome) == (
        "token-1", "events.reprocess", ["events:0:0"], "succeeded")
    assert detail["dry_run"] is True
    assert detail["from"] == "console"

    hidden = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">',
                             page.split('id="reprocess-these"')[0].rsplit("<form", 1)[1]))
    done = client.post("/console/events/reprocess", data=hidden)  # "Reprocess these"
    assert done.status_code == 303
    assert "/console/events?" in done.headers["Location"]
    assert "source=bookings" in done.headers["Location"]
    assert outcome_of_record(console) == "applied"
    assert "Reprocessed 1 of 1 records selected: 1 changed outcome" in client.get(
        done.headers["Location"]).get_data(as_text=True)
    assert console.db.execute(AUDITED).fetchone()[4]["dry_run"] is False


@pytest.mark.parametrize(("query", "expected"), [
    ("actor=viewer", {"viewer"}),
    ("action=outbox.retry", {"outbox.retry"}),
    ("outcome=refused", {"refused"}),
])
def test_the_audit_page_filters(console: Console, query: str, expected: set[str]) -> None:
    client = signed_in(console, VIEWER)  # a viewer may read the trail
    for _ in range(2):  # at least two rows of each kind
        client.post(f"/console/outbox/{console.dead_email}/retry",
                    data={"csrf_token": csrf_of(client, "/console/outbox")})
    answer = client.get(f"/console/audit?{query}")
    assert answer.status_code == 200
    cells = re.findall(r'<tr id="audit-\d+">(.*?)</tr>', answer.get_data(as_text=True), re.S)
    assert cells
    for cell in cells:
        assert any(value in cell for value in expected)


def test_the_audit_page_pages_and_names_bad_filters(console: Console) -> None:
    client = signed_in(console, VIEWER)
    for _ in range(3):
        client.post(f"/console/outbox/{console.dead_email}/retry",
                    data={"csrf_token": csrf_of(client, "/console/outbox")})
    first = client.get("/console/audit?limit=2").get_data(as_text=True)
    ids = re.findall(r'<tr id="audit-(\d+)">', first)
    assert len(ids) == 2
    after = re.search(r'id="next-page" href="([^"]+)"', first)
    assert after is not None
    second = client.get(after.group(1).replace("&amp;", "&")).get_data(as_text=True)
    later = re.findall(r'<tr id="audit-(\d+)">', second)
    assert later
    assert max(map(int, later)) < min(map(int, ids))
    for bad in ("outcome=lost", "at_after=yesterday", "limit=0", "cursor=nope"):
        assert client.get(f"/console/audit?{bad}").status_code == 422
    assert client.get("/console/audit?at_after=2999-01-01T00:00:00Z").status_code == 200
