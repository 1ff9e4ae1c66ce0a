"""ASGI middleware of the engine app: the bearer token over TCP, and the count of open requests
that the idle exit reads. Plain ASGI (not BaseHTTPMiddleware) so event streams pass through
untouched."""

from __future__ import annotations

import hmac
import time

from starlette.responses import JSONResponse


class TokenGate:
    """Requests that arrive over TCP must carry `Authorization: Bearer <token>`; Unix socket
    requests are already limited to this user by the socket's permissions. Plain ASGI (not
    BaseHTTPMiddleware) so event streams pass through untouched."""

    def __init__(self, app, token: str | None):
        self.app, self.token = app, token

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and self.token is not None and _over_tcp(scope):
            sent = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
            if not hmac.compare_digest(sent, f"Bearer {self.token}"):
                await JSONResponse(
                    {"error": "missing or wrong bearer token (see <cache>/run/token)"},
                    status_code=401,
                )(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _over_tcp(scope) -> bool:
    server = scope.get("server")
    # uvicorn gives (path, None) for a Unix socket; anything else counts as network.
    return not (isinstance(server, tuple | list) and len(server) == 2 and server[1] is None)


class Activity:
    """Open requests and when the last one began or ended (for the idle exit)."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.last = time.monotonic()


class ActivityGate:
    """Plain ASGI (event streams pass through untouched): keeps an `Activity` up to date."""

    def __init__(self, app, activity: Activity):
        self.app, self.activity = app, activity

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        a = self.activity
        a.in_flight += 1
        a.last = time.monotonic()
        try:
            await self.app(scope, receive, send)
        finally:
            a.in_flight -= 1
            a.last = time.monotonic()
