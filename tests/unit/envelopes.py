"""Builders of Debezium PostgreSQL envelopes in the shape the real connector sends (see tests/fixtures)."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import orjson

LONDON_NOON_2026_11_24 = int(dt.datetime(2026, 11, 24, 12, tzinfo=dt.UTC).timestamp() * 1000)
_lsn = itertools.count(1000, 8)


def envelope(table: str, op: str, before: dict[str, Any] | None, after: dict[str, Any] | None,
             ts_ms: int = LONDON_NOON_2026_11_24, *, lsn: int | None = None, snapshot: str = "false") -> dict[str, Any]:
    lsn = next(_lsn) if lsn is None else lsn
    return {
        "before": before, "after": after, "op": op, "ts_ms": ts_ms + 5, "transaction": None,
        "source": {"version": "3.6.1.Final", "connector": "postgresql", "name": "tis", "ts_ms": ts_ms,
                   "snapshot": snapshot, "db": "tss", "sequence": orjson.dumps([str(lsn - 4), str(lsn)]).decode(),
                   "schema": "tss", "table": table, "txId": 800, "lsn": lsn, "xmin": None},
    }


def person(trainee_id: str = "47165", **kw: Any) -> dict[str, Any]:
    row = {"trainee_id": trainee_id, "role": "DR in Training", "title": "Dr", "forenames": "Ada",
           "surname": "Okafor", "known_as": None, "email": "a.doctor@example.nhs.uk",
           "telephone_number": "01223 245151", "mobile_number": "07700 900123", "address1": "1 Hills Road",
           "address2": None, "address3": None, "address4": "Cambridge", "post_code": "CB2 0QQ",
           "gmc_number": "7654321", "updated_at": "2026-11-24T12:00:00Z"}
    row.update(kw)
    return row


def placement(pid: str = "315", trainee_id: str = "47165", **kw: Any) -> dict[str, Any]:
    row = {"id": pid, "trainee_id": trainee_id, "placement_type": "In post", "start_date": 20851,
           "end_date": 21215, "grade": "ST3", "specialty": "Cardiology", "sub_specialty": None,
           "site": "Addenbrooke's Hospital", "site_known_as": "Addenbrooke's Hospital", "site_location": "Cambridge",
           "employing_body": "Cambridge University Hospitals NHS Foundation Trust",
           "training_body": "Cambridge University Hospitals NHS Foundation Trust",
           "whole_time_equivalent": "1.00", "owner": "Health Education England East of England",
           "updated_at": "2026-11-24T12:00:00Z"}
    row.update(kw)
    return row
