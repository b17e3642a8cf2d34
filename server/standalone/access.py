"""Who is calling the production server and what they may touch: server/auth.py's rules, applied here.

The bearer token becomes an identity through ``server.auth.identify`` (users file, service token,
gateway), and every thread, run and assistant action goes through ``server.auth.owner_only``, the
same ``@auth.on`` handler LangGraph Server calls: it stamps ``metadata.owner`` on what a caller
creates, checks a run's ``study_id`` was uploaded by its caller, and returns the owner filter every
other action is held to (none for the service identity).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from langgraph_sdk import Auth
from starlette.authentication import AuthCredentials
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from server.auth import identify, owner_only

OPEN_PATHS = frozenset({"/ok"})
"""Liveness only; everything else needs an identity."""


class Denied(Exception):
    """A request the rules refuse; ``status`` and ``detail`` are what the caller is told."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


@dataclass
class Caller:
    """The authenticated caller as LangGraph's auth handlers and our routes read it."""

    identity: str
    display_name: str
    permissions: list[str] = field(default_factory=list)
    is_authenticated: bool = True

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("utf-8", "replace") for k, v in scope.get("headers") or ()}


class Authenticate:
    """ASGI middleware: 401 (or 503) before anything reads the body; else the caller in ``scope``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        try:
            user = identify(headers.get("authorization"), headers).auth_user()
        except Auth.exceptions.HTTPException as exc:
            await JSONResponse({"detail": exc.detail}, status_code=exc.status_code,
                               headers={"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
                               )(scope, receive, send)
            return
        perms = [str(p) for p in user.get("permissions") or []]
        scope["user"] = Caller(str(user["identity"]), str(user.get("display_name") or ""), perms)
        scope["auth"] = AuthCredentials(perms)
        await self.app(scope, receive, send)


async def authorize(scope: Scope, resource: str, action: str, value: dict[str, Any]) -> dict[str, Any] | None:
    """Run the ownership handler for ``resource``/``action``; the owner filter to apply (None: all).

    ``value`` may be changed in place (the owner stamped into its ``metadata``). Raises Denied."""
    caller: Caller = scope["user"]
    ctx = Auth.types.AuthContext(permissions=caller.permissions, user=caller, resource=resource,  # type: ignore[arg-type]
                                 action=action)  # type: ignore[arg-type]
    try:
        result = await owner_only(ctx, value)
    except Auth.exceptions.HTTPException as exc:
        raise Denied(exc.status_code, str(exc.detail)) from None
    if result is False:
        raise Denied(403, f"this caller may not {action} {resource}")
    return result if isinstance(result, dict) else None
