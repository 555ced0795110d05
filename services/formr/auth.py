"""Pure: who is asking, believed only from the authenticating proxy in front of the service.

The service never authenticates anyone itself. oauth2-proxy (deploy/k8s, with the NHS identity
provider) signs the person in and forwards ``X-Forwarded-User`` and ``X-Forwarded-Groups``; the
groups name the local offices the person is entitled to. Those headers are believed only when the
request comes from a configured proxy address, or carries the shared secret the proxy adds;
otherwise there is no identity (401). Anyone able to reach the port directly could write the
headers, which is why the address or the secret is required and why the port binds to localhost
unless configured.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Trust:
    proxies: frozenset[str]
    secret: str | None
    secret_header: str = "X-Proxy-Secret"  # noqa: S105  a header's name, not a secret
    user_header: str = "X-Forwarded-User"
    groups_header: str = "X-Forwarded-Groups"
    office_groups: Mapping[str, str] | None = None  # group -> local office; else a group names its office


@dataclass(frozen=True, slots=True)
class Identity:
    user: str
    offices: tuple[str, ...]  # sorted, distinct


def _trusted(remote: str | None, headers: Mapping[str, str], trust: Trust) -> bool:
    if remote is not None and remote in trust.proxies:
        return True
    if trust.secret:
        given = headers.get(trust.secret_header)
        return given is not None and hmac.compare_digest(given.encode(), trust.secret.encode())
    return False


def identify(remote: str | None, headers: Mapping[str, str], trust: Trust) -> Identity | None:
    """The identity of a request, or ``None`` (answer 401). ``headers`` is case-insensitive (aiohttp's)."""
    if not _trusted(remote, headers, trust):
        return None
    user = (headers.get(trust.user_header) or "").strip()
    if not user:
        return None
    groups = [g.strip() for g in (headers.get(trust.groups_header) or "").split(",") if g.strip()]
    mapping = trust.office_groups or {}
    offices = sorted({mapping.get(g, g) for g in groups})
    return Identity(user[:200], tuple(offices))


def allowed_offices(identity: Identity, asked: Sequence[str]) -> tuple[str, ...] | None:
    """The offices to show: those asked for if every one is the reader's (``None`` when one is not:
    answer 403), else all of the reader's."""
    if not asked:
        return identity.offices
    if any(a not in identity.offices for a in asked):
        return None
    return tuple(sorted(set(asked)))
