"""The Form R report: the read model's writes, identity from the proxy, the page and the downloads."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.formr import report
from services.formr.auth import Identity, Trust, allowed_offices, identify
from services.formr.readmodel import to_write
from services.formr.rules import Arcp, FormR, Person, Programme, Row, Rules, build_rows
from services.formr.web import build_web
from services.netchange.cdc import MalformedEnvelope, parse_envelope

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "keyed"
TODAY = dt.date(2026, 12, 1)
EAST, NORTH = "Health Education England East of England", "Health Education England North West"


# --- the read model's writes ------------------------------------------------------------------------

def _keyed(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines() if line.strip()]


def test_writes_from_captured_form_r_and_arcp() -> None:
    writes = [to_write(parse_envelope(json.dumps(r["value"]))) for r in _keyed("form_r_and_arcp.jsonl")]
    arcp = writes[0]
    assert arcp and arcp.table == "arcp" and arcp.values
    assert arcp.values["review_date"] == dt.date(1970, 1, 1) + dt.timedelta(days=20984)
    states = [w.values["lifecycle_state"] for w in writes[1:] if w and w.values]
    assert states[:3] == ["DRAFT", "SUBMITTED", "UNSUBMITTED"]
    ranks = [w.rank for w in writes if w]
    assert ranks == sorted(ranks)
    sub = writes[2]
    assert sub and sub.values and sub.values["submitted_at"].tzinfo is not None


def test_an_owner_change_create_outranks_its_delete() -> None:
    delete, create = (to_write(parse_envelope(json.dumps(r["value"]))) for r in _keyed("placement_moved.jsonl"))
    assert delete is None and create is None  # placements are not in the read model
    rows = _keyed("programme_membership_crud.jsonl")
    env = rows[0]["value"]
    d = dict(env, op="d", before=env["after"], after=None)
    w_create, w_delete = to_write(parse_envelope(json.dumps(env))), to_write(parse_envelope(json.dumps(d)))
    assert w_create and w_delete and w_delete.values is None
    assert w_create.rank > w_delete.rank  # same position: the create wins in either order


def test_unusable_values_are_malformed() -> None:
    env = _keyed("form_r_and_arcp.jsonl")[2]["value"]
    bad = dict(env, after=dict(env["after"], submitted_at="yesterday"))
    with pytest.raises(MalformedEnvelope, match="submitted_at"):
        to_write(parse_envelope(json.dumps(bad)))
    bad = dict(env, after=dict(env["after"], trainee_id=None))
    with pytest.raises(MalformedEnvelope, match="trainee_id"):
        to_write(parse_envelope(json.dumps(bad)))


# --- identity ---------------------------------------------------------------------------------------

TRUST = Trust(proxies=frozenset({"10.0.0.5"}), secret="s3cret", office_groups={"lo-east": EAST})
GOOD = {"X-Forwarded-User": "pm@example.nhs.uk", "X-Forwarded-Groups": "lo-east, staff"}


def test_identity_only_from_the_proxy_or_with_the_secret() -> None:
    assert identify("10.0.0.5", GOOD, TRUST) == Identity("pm@example.nhs.uk", (EAST, "staff"))
    assert identify("127.0.0.1", GOOD, TRUST) is None  # forged, not from the proxy
    assert identify("127.0.0.1", {**GOOD, "X-Proxy-Secret": "wrong"}, TRUST) is None
    assert identify("127.0.0.1", {**GOOD, "X-Proxy-Secret": "s3cret"}, TRUST) is not None
    assert identify("10.0.0.5", {"X-Forwarded-Groups": "lo-east"}, TRUST) is None  # no user
    assert identify("10.0.0.5", GOOD, Trust(proxies=frozenset(), secret=None)) is None  # nothing trusted


def test_allowed_offices() -> None:
    who = Identity("u", (EAST,))
    assert allowed_offices(who, []) == (EAST,)
    assert allowed_offices(who, [EAST]) == (EAST,)
    assert allowed_offices(who, [NORTH]) is None
    assert allowed_offices(who, [EAST, NORTH]) is None


# --- rendering --------------------------------------------------------------------------------------

def sample_rows() -> list[Row]:
    progs = {"pm-e": Programme("pm-e", "t1", "Cardiology", "EOE1", EAST),
             "pm-e2": Programme("pm-e2", "t2", "=HYPERLINK(\"http://x\")", "EOE2", EAST),
             "pm-n": Programme("pm-n", "t3", "Paediatrics", "NWE1", NORTH)}
    persons = {"t1": Person("t1", forenames="Ada", surname="Okafor"),
               "t2": Person("t2", forenames="<script>alert(1)</script>", surname="-Smith"),
               "t3": Person("t3", forenames="Nora", surname="North")}
    arcps = [Arcp("a1", "t1", "pm-e", TODAY + dt.timedelta(days=60)),
             Arcp("a2", "t2", "pm-e2", TODAY + dt.timedelta(days=10)),
             Arcp("a3", "t3", "pm-n", TODAY + dt.timedelta(days=5))]
    forms = [FormR("f1", "t1", "A", "pm-e", "SUBMITTED", dt.datetime(2026, 11, 1, tzinfo=dt.UTC)),
             FormR("f2", "t1", "B", "pm-e", "SUBMITTED", dt.datetime(2026, 11, 2, tzinfo=dt.UTC))]
    return build_rows(arcps, forms, progs, persons, TODAY)


def test_csv_neutralises_formulas() -> None:
    text = report.to_csv(sample_rows())
    cells = list(csv.reader(io.StringIO(text)))
    assert cells[0][0] == "At risk"
    flat = [c for row in cells[1:] for c in row]
    assert "'=HYPERLINK(\"http://x\")" in flat and "'-Smith" not in flat  # a name is two cells joined
    assert all(not c.startswith(("=", "+", "@", "\t", "\r")) for c in flat)
    for bad in ("=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"):
        assert report.neutralise(bad) == "'" + bad
    assert report.neutralise("Cardiology") == "Cardiology"


def test_html_escapes_and_puts_at_risk_first() -> None:
    rows = sample_rows()
    page = report.Page(user="pm", offices=(EAST, NORTH), office=None, programmes=["Cardiology"], programme=None,
                       today=TODAY)
    html = report.to_html(rows, page)
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html
    assert html.index('data-trainee="t3"') < html.index('data-trainee="t1"')  # at risk before on track
    assert html.count('<span class="flag">At risk</span>') == 2
    assert '<th scope="col"' in html and '<th scope="row">' in html and '<label for="local_office">' in html
    assert "<svg role=\"img\"" in html and "Cardiology" in html


def test_pages_of_rows_keep_totals_and_filters() -> None:
    many = [Arcp(f"a{i}", f"t{i}", f"pm{i}", TODAY + dt.timedelta(days=i % 110)) for i in range(450)]
    progs = {f"pm{i}": Programme(f"pm{i}", f"t{i}", "Cardiology", "EOE1", EAST) for i in range(450)}
    rows = build_rows(many, [], progs, {}, TODAY)
    base: dict[str, Any] = {"user": "pm", "offices": (EAST,), "office": EAST, "programmes": ["Cardiology"],
                            "programme": "Cardiology", "today": TODAY}
    first = report.to_html(rows, report.Page(**base))
    assert first.count("data-trainee=") == 200 and "<strong>450</strong> reviews" in first
    assert "rows 1 to 200, page 1 of 3" in first and "Previous page" not in first
    assert 'rel="next"' in first and "page=2" in first and "programme=Cardiology" in first
    last = report.to_html(rows, report.Page(**base, number=3))
    assert last.count("data-trainee=") == 50 and "rows 401 to 450, page 3 of 3" in last
    assert 'rel="prev"' in last and 'rel="next"' not in last
    # the at-risk rows (reviews within 6 weeks, nothing submitted) are all on the first page
    at_risk = sum(r.at_risk for r in rows)
    assert 0 < at_risk <= 200 and first.count('<span class="flag">At risk</span>') == at_risk
    beyond = report.to_html(rows, report.Page(**base, number=99))  # past the end: the last page
    assert "page 3 of 3" in beyond


def test_sorting_keeps_at_risk_first() -> None:
    rows = report.order(sample_rows(), "name")
    assert [r.at_risk for r in rows] == sorted((r.at_risk for r in rows), reverse=True)


# --- the web shell: only their own trainees --------------------------------------------------------

def _app(trust: Trust) -> Any:
    rows = sample_rows()

    def load(offices: tuple[str, ...], today: dt.date, rules: Rules) -> list[Row]:
        return [r for r in rows if r.local_office in offices]

    return build_web(load, trust, Rules(), lambda: dt.datetime(2026, 12, 1, 9, tzinfo=dt.UTC))


async def _client(trust: Trust) -> TestClient[Any, Any]:
    client = TestClient(TestServer(_app(trust)))
    await client.start_server()
    return client


EAST_PM = {"X-Forwarded-User": "pm@example.nhs.uk", "X-Forwarded-Groups": "lo-east", "X-Proxy-Secret": "s3cret"}


async def test_no_identity_is_401_and_forged_headers_from_elsewhere_are_ignored() -> None:
    client = await _client(TRUST)  # the test client is 127.0.0.1, not the proxy's address
    try:
        for path in ("/", "/report.csv", "/report.json"):
            assert (await client.get(path)).status == 401
            forged = {"X-Forwarded-User": "x", "X-Forwarded-Groups": f"lo-east,{NORTH}"}
            resp = await client.get(path, headers=forged)
            assert resp.status == 401
            assert "Okafor" not in await resp.text()
        assert (await client.get("/healthz")).status == 200
    finally:
        await client.close()


async def test_a_manager_sees_only_their_office_everywhere() -> None:
    client = await _client(TRUST)
    try:
        page = await (await client.get("/", headers=EAST_PM)).text()
        assert "Okafor" in page and "North" not in page.replace("North West", "")
        assert "Paediatrics" not in page
        csv_text = await (await client.get("/report.csv", headers=EAST_PM)).text()
        assert "Okafor" in csv_text and "t3" not in csv_text and NORTH not in csv_text
        body = await (await client.get("/report.json", headers=EAST_PM)).json()
        assert {r["trainee_id"] for r in body["rows"]} == {"t1", "t2"} and body["totals"]["reviews"] == 2
        for path in ("/", "/report.csv", "/report.json"):  # asking for another office by name
            resp = await client.get(path, params={"local_office": NORTH}, headers=EAST_PM)
            assert resp.status == 403 and "North" not in await resp.text()
            resp = await client.get(path, params=[("local_office", EAST), ("local_office", NORTH)], headers=EAST_PM)
            assert resp.status == 403
        filtered = await (await client.get("/report.json", params={"programme": "Cardiology"}, headers=EAST_PM)).json()
        assert [r["trainee_id"] for r in filtered["rows"]] == ["t1"]
        resp = await client.get("/", headers=EAST_PM)
        assert "Content-Security-Policy" in resp.headers and resp.headers["Cache-Control"] == "no-store"
    finally:
        await client.close()


async def test_proxy_address_is_trusted_without_secret_and_no_office_is_403() -> None:
    client = await _client(Trust(proxies=frozenset({"127.0.0.1"}), secret=None))
    try:
        resp = await client.get("/report.json", headers={"X-Forwarded-User": "u", "X-Forwarded-Groups": NORTH})
        assert resp.status == 200 and {r["trainee_id"] for r in (await resp.json())["rows"]} == {"t3"}
        resp = await client.get("/", headers={"X-Forwarded-User": "u", "X-Forwarded-Groups": "nothing-here"})
        assert resp.status == 200  # a group naming no office with trainees: an empty report, nothing else
        assert "Okafor" not in await resp.text()
        resp = await client.get("/", headers={"X-Forwarded-User": "u"})
        assert resp.status == 403
    finally:
        await client.close()
