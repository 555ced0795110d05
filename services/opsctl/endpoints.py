"""The services an operator command reads besides Kafka: the ledger and source PostgreSQL databases,
Kafka Connect's REST API and the aggregator's web endpoint. Endpoints come from the option, then the
environment, then the local stack's scratch dir, then the services' settings; a failure to connect is
:class:`Unreachable` naming host and port (never a password).

Re-exported by ``services.opsctl.common``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from services.opsctl.errors import OpsError, Unreachable, one_line
from services.settings import AggregatorSettings, MailerSettings


def local_stack() -> Any:
    """The local stack's ``StackInfo`` (``TN_STACK_SCRATCH`` or ``.stack``), or None when none is recorded."""
    from services.devstack import stack

    scratch = Path(os.environ.get("TN_STACK_SCRATCH") or stack.DEFAULT_SCRATCH)
    try:
        return stack._load(scratch.resolve()) if scratch.exists() else None
    except Exception:  # noqa: BLE001 - no stack: the caller falls back to settings
        return None


def connect_url(option: str | None = None) -> str | None:
    """Kafka Connect's REST URL: the option, ``TN_CONNECT_URL``, or the local stack's; None if unknown."""
    if option:
        return option.rstrip("/")
    if os.environ.get("TN_CONNECT_URL"):
        return os.environ["TN_CONNECT_URL"].rstrip("/")
    info = local_stack()
    return info.connect_url if info is not None and info.connect_url else None


def source_dsn(option: str | None = None) -> str:
    """The source (TSS) database with the replication slot: the option, ``TN_SOURCE_DSN``, the local
    stack's database, else the ledger's DSN (``TN_LEDGER_DSN``: on the local stack they are one)."""
    if option:
        return option
    if os.environ.get("TN_SOURCE_DSN"):
        return os.environ["TN_SOURCE_DSN"]
    info = local_stack()
    if info is not None:
        return str(info.pg_dsn)
    return MailerSettings().ledger_dsn


def ledger_dsn(option: str | None = None) -> str:
    """The mailer's ledger database: the option, ``TN_LEDGER_DSN`` (MailerSettings)."""
    return option or MailerSettings().ledger_dsn


def aggregator_url(option: str | None = None) -> str:
    """The aggregator's web endpoint (/metrics): the option, ``TN_AGGREGATOR_URL``, or
    ``http://TN_WEB_HOST:TN_WEB_PORT``."""
    if option:
        return option.rstrip("/")
    if os.environ.get("TN_AGGREGATOR_URL"):
        return os.environ["TN_AGGREGATOR_URL"].rstrip("/")
    s = AggregatorSettings()
    return f"http://{s.web_host}:{s.web_port}"


def dsn_endpoint(dsn: str) -> str:
    """``host:port`` of a libpq conninfo or URL, for error messages (never the password)."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        d = conninfo_to_dict(dsn)
        return f"{d.get('host', 'localhost')}:{d.get('port', 5432)}"
    except Exception:  # noqa: BLE001 - a malformed DSN is reported by the connect that follows
        return "the database"


def pg_connect(dsn: str, what: str = "database", timeout: int = 5) -> Any:
    """A psycopg connection (autocommit); :class:`Unreachable` naming host and port if it fails."""
    import psycopg

    try:
        return psycopg.connect(dsn, connect_timeout=timeout, autocommit=True)
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise Unreachable(f"cannot reach the {what} at {dsn_endpoint(dsn)}: {first}") from None


def http_json(method: str, url: str, body: Any = None, timeout: float = 10.0, what: str = "service") -> Any:
    """A JSON HTTP call; :class:`Unreachable` naming host and port when nothing answers, ``OpsError``
    with the status and the body's message on an HTTP error."""
    import urllib.error
    import urllib.parse
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,  # noqa: S310  an operator's http(s) URL from settings
                                 headers={"Content-Type": "application/json", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310  an operator's http(s) URL from settings
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        text = exc.read().decode(errors="replace")
        try:
            message = json.loads(text).get("message", text)
        except (ValueError, AttributeError):
            message = text
        raise OpsError(f"{what} answered HTTP {exc.code} to {method} {url}: {one_line(message)[:300]}") from None
    except (urllib.error.URLError, OSError) as exc:
        parsed = urllib.parse.urlsplit(url)
        reason = getattr(exc, "reason", exc)
        raise Unreachable(f"cannot reach {what} at {parsed.hostname}:{parsed.port or 80} ({reason})") from None
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")
