"""Personal data in what the operator commands show: masked unless ``--show-personal``, which is
written to the audit log with the operator's login name.

Re-exported by ``services.opsctl.common``.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Mapping
from typing import Any

import structlog

PERSONAL_FIELDS: frozenset[str] = frozenset({
    "title", "forenames", "surname", "known_as", "name", "first_name", "last_name", "maiden_name",
    "email", "previous_email", "email_address", "telephone_number", "mobile_number", "phone",
    "address1", "address2", "address3", "address4", "post_code", "postcode",
    "gmc_number", "gdc_number", "public_health_number", "date_of_birth", "dob", "ni_number",
    "national_insurance_number", "to", "recipient",
})
MASK = "‹masked›"


def _is_personal(key: object) -> bool:
    return isinstance(key, str) and key.lower() in PERSONAL_FIELDS


def _mask_scalar(value: Any) -> Any:
    return None if value is None else MASK


def mask_personal(obj: Any) -> Any:
    """A copy of ``obj`` in which the value of every personal field is masked (``None`` stays ``None``).

    A personal field's value that is a mapping (a ``recipient`` record, a net-change field change
    ``{"old": .., "new": ..}``) is masked throughout; lists are walked.
    """
    if isinstance(obj, Mapping):
        out: dict[Any, Any] = {}
        for k, v in obj.items():
            out[k] = _mask_all(v) if _is_personal(k) else mask_personal(v)
        return out
    if isinstance(obj, list | tuple):
        return [mask_personal(v) for v in obj]
    return obj


def _mask_all(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {k: _mask_all(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_mask_all(v) for v in obj]
    return _mask_scalar(obj)


def operator_name() -> str:
    """The operator's login name (``getpass.getuser()``; ``unknown`` if there is none)."""
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in a bare container
        return os.environ.get("USER") or "unknown"


def audit_personal(command: str, **context: Any) -> None:
    """Write the audit line for showing personal data unmasked (the structured log, stderr)."""
    from services import logs

    if not structlog.is_configured():
        logs.configure()
    structlog.get_logger("opsctl.audit").warning("opsctl.personal_data_shown", audit=True, command=command,
                                                 operator=operator_name(), **context)
