"""The audit trail of operator actions that change something (reset-offsets --execute, resend
--execute, deadletter retry --execute): a structured log line on stderr (``audit: true``, the
operator, the reason, the request id) and, for resend and retry, a row in ``notify.ops_audit``
(created with the ledger's schema, services/notifier/ledger.py)."""

from __future__ import annotations

import uuid
from typing import Any

import structlog

from services import logs


def new_request_id(prefix: str) -> str:
    """A fresh request id, e.g. ``rs-3f9c0a1b2c4d`` (resend) or ``dl-...`` (dead-letter retry)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def audit(event: str, **context: Any) -> None:
    """One audit line in the structured log (stderr): ids, operator and reason only, no personal data."""
    if not structlog.is_configured():
        logs.configure()
    structlog.get_logger("opsctl.audit").warning(event, audit=True, **context)
