"""The report page as a programme manager sees it: headless Chromium (Debian's ``chromium``, driven by
Playwright) loads the page of the real Form R service, fed through PostgreSQL, Debezium and Kafka,
with the headers the authenticating proxy adds.

What a person would check: the at-risk rows come first and say so in words, the programme filter
works from the keyboard, another office's trainees are nowhere on the page, and a page without the
proxy's identity is refused. With ``TN_DOCS_CAPTURE=1`` the screenshot is written to
``docs/formr-report.png`` (the one kept in the repository), else to the test's scratch folder.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_formr import NOW, SECRET, FormrService, formr  # noqa: F401 - the fixture

pytestmark = pytest.mark.integration
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DOCS = Path(__file__).resolve().parents[2] / "docs"
# flags for a closed network: without them Chromium keeps trying Google's hosts at every start
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]

PEOPLE = [  # forenames, surname, programme, days to the review, Part A, Part B (None: no form)
    ("Amara", "Okafor", "Cardiology", 12, None, None),
    ("Tomasz", "Nowak", "Anaesthetics", 25, "SUBMITTED", "DRAFT"),
    ("Priya", "Raman", "Cardiology", 33, "SUBMITTED", "UNSUBMITTED"),
    ("Siân", "Evans", "Anaesthetics", 50, "SUBMITTED", "SUBMITTED"),
    ("Oluwaseun", "Adeyemi", "General Practice", 70, "DRAFT", None),
    ("Grace", "O'Neill", "General Practice", 95, "SUBMITTED", "SUBMITTED"),
    ("=HYPERLINK(\"x\")", "<b>Hale</b>", "Cardiology", 104, None, "SUBMITTED"),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/setup installs Debian's chromium package")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield b
        b.close()


def seed(conn: Any, tag: str, office: str) -> dict[str, str]:
    """The people above in ``office``: trainee id -> surname."""
    made = {}
    for i, (first, last, programme, days, part_a, part_b) in enumerate(PEOPLE):
        tid = f"b{i}-{tag}"
        pm = str(uuid.uuid4())
        conn.execute("INSERT INTO tss.personal_details (trainee_id, role, title, forenames, surname, email) "
                     "VALUES (%s, 'DR in Training', 'Dr', %s, %s, %s)", (tid, first, last, f"dr.{tid}@example.nhs.uk"))
        conn.execute("INSERT INTO tss.programme_membership (id, trainee_id, programme_name, programme_number, "
                     "managing_deanery) VALUES (%s, %s, %s, 'EOE8950', %s)", (pm, tid, programme, office))
        conn.execute("INSERT INTO tss.arcp (id, trainee_id, programme_membership_id, review_date) "
                     "VALUES (%s, %s, %s, %s)", (f"arcp-{tid}", tid, pm, NOW.date() + dt.timedelta(days=days)))
        for part, state in (("A", part_a), ("B", part_b)):
            if state is None:
                continue
            submitted = NOW - dt.timedelta(days=3) if state != "DRAFT" else None
            conn.execute("INSERT INTO tss.form_r (id, trainee_id, part, programme_membership_id, is_arcp, "
                         "lifecycle_state, submitted_at) VALUES (%s, %s, %s, %s, true, %s, %s)",
                         (uuid.uuid4(), tid, part, pm, state, submitted))
        made[tid] = last
    return made


def test_a_programme_manager_sees_at_risk_first_filters_and_only_their_office(
        formr: Callable[..., FormrService], pg: Any, browser: Any, tmp_path: Path) -> None:  # noqa: F811 - the formr fixture, imported above
    tag = uuid.uuid4().hex[:8]
    capture = os.environ.get("TN_DOCS_CAPTURE") == "1"  # the kept screenshot: plain office names
    office, other = ("East of England", "Wessex") if capture else (f"East of England {tag}", f"Wessex {tag}")
    svc = formr()
    conn = pg()
    mine = seed(conn, tag, office)
    stranger = f"x-{tag}"
    conn.execute("INSERT INTO tss.personal_details (trainee_id, role, forenames, surname, email) "
                 "VALUES (%s, 'DR in Training', 'Zed', 'Stranger', 'z@example.nhs.uk')", (stranger,))
    pm = str(uuid.uuid4())
    conn.execute("INSERT INTO tss.programme_membership (id, trainee_id, programme_name, managing_deanery) "
                 "VALUES (%s, %s, 'Cardiology', %s)", (pm, stranger, other))
    conn.execute("INSERT INTO tss.arcp (id, trainee_id, programme_membership_id, review_date) VALUES (%s, %s, %s, %s)",
                 (f"arcp-{stranger}", stranger, pm, NOW.date() + dt.timedelta(days=5)))
    svc.wait(lambda: len(svc.rows(office)) == len(PEOPLE) and len(svc.rows(other)) == 1, "every row in the report")

    base = f"http://127.0.0.1:{svc.port}/"
    context = browser.new_context(viewport={"width": 1280, "height": 1000}, extra_http_headers={
        "X-Forwarded-User": "tpm@example.nhs.uk", "X-Forwarded-Groups": office, "X-Proxy-Secret": SECRET})
    page = context.new_page()
    try:
        assert page.goto(base).status == 200
        rows = page.locator("#report tbody tr")
        assert rows.count() == len(PEOPLE)
        flags = [rows.nth(i).locator("td.status").inner_text().strip() for i in range(rows.count())]
        risky = [f == "At risk" for f in flags]
        assert risky == sorted(risky, reverse=True) and sum(risky) == 3  # at-risk rows first, marked in words
        first = rows.nth(0)
        assert "Okafor" in first.locator("th").inner_text() and "12 days" in first.inner_text()
        # escaped, never markup: the name with tags is shown as text
        assert page.get_by_text("<b>Hale</b>", exact=False).count() == 1 and page.locator("#report b").count() == 0
        body = page.locator("body").inner_text()
        assert "Stranger" not in body and stranger not in body and other not in body
        assert "3\nat risk" in body and f"{len(PEOPLE)}\nreviews" in body

        if capture:
            page.screenshot(path=str(DOCS / "formr-report.png"), full_page=True)
        else:
            page.screenshot(path=str(tmp_path / "formr-report.png"), full_page=True)

        # the programme filter, by keyboard only: focus the select by its label, choose, Tab to Show, Enter
        page.get_by_label("Programme", exact=True).focus()
        page.keyboard.press("End")  # the last option in alphabetical order: General Practice
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == "Show"
        page.keyboard.press("Enter")
        page.wait_for_url("**programme=General+Practice**")
        names = page.locator("#report tbody th").all_inner_texts()
        assert len(names) == 2 and all(("Adeyemi" in n) or ("O'Neill" in n) for n in names)
        assert page.get_by_label("Programme", exact=True).input_value() == "General Practice"

        # the query string cannot reach another office
        resp = page.goto(base + "?local_office=" + other.replace(" ", "+"))
        assert resp.status == 403 and "Stranger" not in page.content()
        csv = context.request.get(base + "report.csv")
        assert csv.ok and stranger not in csv.text() and all(t in csv.text() for t in mine)
        assert "'=HYPERLINK" in csv.text()  # a formula is neutralised in the download
    finally:
        context.close()

    # no proxy identity, no page: Chromium on its own (no secret, not the proxy's address)
    bare = browser.new_context()
    try:
        page = bare.new_page()
        resp = page.goto(base)
        assert resp.status == 401 and "Sign in" in page.content() and "Okafor" not in page.content()
    finally:
        bare.close()
