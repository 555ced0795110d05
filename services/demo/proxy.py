"""The demo's stand-in for the authenticating proxy in front of the Form R report.

In production oauth2-proxy signs the programme manager in (deploy/k8s) and forwards who they are.
On this machine there is no identity provider, so the demo runs this: a loopback-only forwarder
that adds the headers oauth2-proxy would add for one demo programme manager entitled to the demo's
local offices, with the shared secret the report service is configured with. It forwards GET
requests only, binds to 127.0.0.1, and never runs outside the demo.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

from aiohttp import ClientSession, ClientTimeout, web

from services.devstack.proc import LOOPBACK

USER = "demo.tpm@example.nhs.uk"
_PASS = ("Content-Type", "Content-Disposition", "Cache-Control", "Content-Security-Policy", "X-Content-Type-Options",
         "Referrer-Policy", "X-Frame-Options")


def build(upstream: str, secret: str, groups: str) -> web.Application:
    async def forward(request: web.Request) -> web.StreamResponse:
        headers = {"X-Forwarded-User": USER, "X-Forwarded-Groups": groups, "X-Proxy-Secret": secret}
        async with request.app["session"].get(upstream + request.path_qs, headers=headers,
                                              allow_redirects=False) as resp:
            body = await resp.read()
            return web.Response(status=resp.status, body=body,
                                headers={k: v for k, v in resp.headers.items() if k in _PASS})

    async def session(app: web.Application) -> AsyncIterator[None]:
        app["session"] = ClientSession(timeout=ClientTimeout(total=30))
        yield
        await app["session"].close()

    app = web.Application()
    app.cleanup_ctx.append(session)
    app.router.add_get("/{tail:.*}", forward)
    return app


def run(upstream: str, port: int, groups: str) -> None:
    secret = os.environ.get("TN_FORMR_PROXY_SECRET", "")
    if not secret:
        raise SystemExit("TN_FORMR_PROXY_SECRET is not set: the report service would refuse every request")
    web.run_app(build(upstream.rstrip("/"), secret, groups), host=LOOPBACK, port=port, print=None)
