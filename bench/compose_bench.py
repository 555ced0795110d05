"""Time composing one digest: the document and templates, then the MIME bytes written by the standard
library's ``email`` package (``to_mime().as_bytes()``) against our direct writer (``to_bytes``).

    .venv/bin/python bench/compose_bench.py [--n 500]

Prints JSON: milliseconds per email for each step, on the full golden record (every entity, every kind).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from services.notifier import compose

RECORD = Path(__file__).resolve().parents[1] / "tests" / "unit" / "golden" / "full_record.json"


def per_call_ms(fn: Callable[[], Any], n: int) -> float:
    fn()  # warm caches (templates, inliner)
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return round((time.perf_counter() - start) / n * 1000, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=500)
    n = parser.parse_args().n
    record = json.loads(RECORD.read_text())
    contacts = compose.Contacts.default()

    def composed() -> compose.ComposedEmail:
        result = compose.compose_digest(record, contacts=contacts, message_id="<bench@example.nhs.uk>",
                                        mail_from="Training record notifications <no-reply@example.nhs.uk>")
        assert isinstance(result, compose.ComposedEmail)
        return result

    email = composed()
    figures = {
        "emails": n,
        "message_bytes": len(compose.to_bytes(email)),
        "compose_digest_ms": per_call_ms(composed, n),
        "email_package_to_mime_as_bytes_ms": per_call_ms(lambda: compose.to_mime(email).as_bytes(), n),
        "direct_to_bytes_ms": per_call_ms(lambda: compose.to_bytes(email), n),
    }
    figures["total_with_email_package_ms"] = round(figures["compose_digest_ms"]
                                                   + figures["email_package_to_mime_as_bytes_ms"], 3)
    figures["total_with_direct_writer_ms"] = round(figures["compose_digest_ms"] + figures["direct_to_bytes_ms"], 3)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
