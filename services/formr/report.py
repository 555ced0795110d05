"""Pure rendering of the report rows: HTML (Jinja2, autoescaped, StrictUndefined), CSV, JSON, an SVG chart.

No I/O and no framework: the web shell and the command line hand rows in and get text back. The
same rows (already limited to the reader's local offices) feed the page, the CSV, the JSON and the
counts, so none of them can show more than the others.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
import orjson

from services.formr.rules import STATUS_WORDS, Part, ProgrammeRate, Row, Totals, totals

_TEMPLATES = Path(__file__).with_name("templates")
_ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(_TEMPLATES), autoescape=True,
                          undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)

SORTS: dict[str, Any] = {
    "review": lambda r: (r.days_to_review, r.trainee_id),
    "name": lambda r: ((r.trainee_name or "").lower(), r.trainee_id),
    "programme": lambda r: ((r.programme_name or "").lower(), r.days_to_review, r.trainee_id),
    "office": lambda r: ((r.local_office or "").lower(), r.days_to_review, r.trainee_id),
    "part_a": lambda r: (r.part_a.status.value, r.days_to_review, r.trainee_id),
    "part_b": lambda r: (r.part_b.status.value, r.days_to_review, r.trainee_id),
}
CSV_COLUMNS = ("At risk", "Trainee ID", "Name", "Local office", "Programme", "Programme number", "ARCP date",
               "Days to ARCP", "Part A", "Part A last submitted", "Part B", "Part B last submitted")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
PAGE_SIZE = 200  # rows per page: the at-risk ones come first, so page 1 is the one to act on


def long_date(day: dt.date | dt.datetime | None) -> str:
    if day is None:
        return "not recorded"
    return f"{day.day} {day:%B %Y}"


def order(rows: Sequence[Row], sort: str = "review", descending: bool = False) -> list[Row]:
    """At-risk rows always first; within each group, the chosen order."""
    key = SORTS.get(sort, SORTS["review"])
    risky = sorted((r for r in rows if r.at_risk), key=key, reverse=descending)
    rest = sorted((r for r in rows if not r.at_risk), key=key, reverse=descending)
    return risky + rest


def days_words(days: int) -> str:
    if days == 0:
        return "today"
    if days < 0:
        return f"{-days} day{'s' if days != -1 else ''} ago"
    return f"in {days} day{'s' if days != 1 else ''}"


def _part(p: Part) -> dict[str, Any]:
    return {"status": p.status.value, "status_words": STATUS_WORDS[p.status],
            "latest_submission": p.latest_submission.isoformat() if p.latest_submission else None}


def as_dicts(rows: Sequence[Row]) -> list[dict[str, Any]]:
    return [{"arcp_id": r.arcp_id, "trainee_id": r.trainee_id, "name": r.trainee_name,
             "local_office": r.local_office, "programme": r.programme_name, "programme_number": r.programme_number,
             "review_date": r.review_date.isoformat(), "days_to_review": r.days_to_review, "at_risk": r.at_risk,
             "part_a": _part(r.part_a), "part_b": _part(r.part_b)} for r in rows]


def _totals_dict(t: Totals) -> dict[str, Any]:
    return {"reviews": t.reviews, "at_risk": t.at_risk, "both_submitted": t.both_submitted, "overdue": t.overdue,
            "part_a_submitted": t.part_a_submitted, "part_b_submitted": t.part_b_submitted,
            "by_programme": [{"programme": p.programme, "reviews": p.reviews, "both_submitted": p.both_submitted,
                              "part_a": p.part_a, "part_b": p.part_b} for p in t.by_programme]}


def to_json(rows: Sequence[Row], today: dt.date) -> bytes:
    return orjson.dumps({"today": today.isoformat(), "totals": _totals_dict(totals(rows)), "rows": as_dicts(rows)},
                        option=orjson.OPT_INDENT_2)


def neutralise(cell: str) -> str:
    """A cell a spreadsheet would run as a formula gets a leading apostrophe."""
    return "'" + cell if cell.startswith(_FORMULA_START) else cell


def _date_cell(ts: dt.datetime | None) -> str:
    return ts.date().isoformat() if ts else ""


def to_csv(rows: Sequence[Row]) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow(CSV_COLUMNS)
    for r in rows:
        cells = ["At risk" if r.at_risk else "", r.trainee_id, r.trainee_name or "", r.local_office or "",
                 r.programme_name or "", r.programme_number or "", r.review_date.isoformat(), str(r.days_to_review),
                 STATUS_WORDS[r.part_a.status], _date_cell(r.part_a.latest_submission),
                 STATUS_WORDS[r.part_b.status], _date_cell(r.part_b.latest_submission)]
        # the day count may be negative: a number, not a formula, so it is left as it is
        w.writerow([c if i == 7 else neutralise(c) for i, c in enumerate(cells)])
    return out.getvalue()


@dataclass(frozen=True, slots=True)
class Bar:
    label: str
    y: int
    width: float
    percent: int
    detail: str


def chart(rates: Sequence[ProgrammeRate], width: int = 300) -> dict[str, Any]:
    """Geometry of a horizontal bar chart: share of reviews with both parts submitted, per programme."""
    bar_h, gap = 18, 8
    bars = []
    for i, p in enumerate(rates):
        pct = round(100 * p.rate)
        bars.append(Bar(p.programme, i * (bar_h + gap), round(width * p.rate, 1), pct,
                        f"{p.both_submitted} of {p.reviews} with both parts submitted"))
    return {"bars": bars, "width": width, "bar_h": bar_h,
            "height": max(1, len(bars)) * (bar_h + gap)}


@dataclass(frozen=True, slots=True)
class Page:
    """What the page shows besides the rows: who reads it, the filters, the sort."""

    user: str
    offices: Sequence[str]  # the reader's entitled local offices
    office: str | None  # the chosen one, or None for all of theirs
    programmes: Sequence[str]
    programme: str | None
    sort: str = "review"
    descending: bool = False
    today: dt.date = dt.date(1970, 1, 1)
    number: int = 1  # the page of rows shown (the totals, the chart and the downloads cover them all)
    size: int = PAGE_SIZE


def _link(view: Page, **changes: Any) -> str:
    q = {"local_office": view.office, "programme": view.programme, "sort": view.sort,
         "dir": "desc" if view.descending else "asc"}
    q.update(changes)
    return "?" + urlencode({k: v for k, v in q.items() if v})


def to_html(rows: Sequence[Row], page: Page) -> str:
    t = totals(rows)
    ordered = order(rows, page.sort, page.descending)
    headers = [("name", "Trainee"), ("office", "Local office"), ("programme", "Programme"),
               ("review", "ARCP date"), ("part_a", "Form R Part A"), ("part_b", "Form R Part B")]
    sort_links: list[dict[str, Any]] = []
    for key, label in headers:
        active = page.sort == key
        desc_next = not page.descending if active else False
        sort_links.append({"key": key, "label": label,
                           "href": _link(page, sort=key, dir="desc" if desc_next else "asc"),
                           "aria": ("descending" if page.descending else "ascending") if active else None})
    query: Mapping[str, str | None] = {"local_office": page.office, "programme": page.programme}
    downloads = {fmt: f"report.{fmt}?" + urlencode({k: v for k, v in query.items() if v}) for fmt in ("csv", "json")}
    pages = max(1, -(-len(ordered) // page.size))
    number = min(max(1, page.number), pages)
    first = (number - 1) * page.size
    shown = ordered[first:first + page.size]
    paging = {"number": number, "pages": pages, "first": first + 1 if shown else 0, "last": first + len(shown),
              "previous": _link(page, page=number - 1) if number > 1 else None,
              "next": _link(page, page=number + 1) if number < pages else None}
    return _ENV.get_template("report.html.j2").render(
        rows=shown, page=page, totals=t, chart=chart(t.by_programme), headers=sort_links, paging=paging,
        words=STATUS_WORDS, long_date=long_date, days_words=days_words, downloads=downloads)
