"""Who may use the graph server: callers bearing ``CXR_AGENT_SERVER_TOKEN`` (LangGraph custom auth).

The server holds every conversation (replies, findings) and every uploaded study, so a deployment
shared beyond one machine must not answer strangers. ``langgraph.json`` points LangGraph Server at
``auth`` below, applies it to our ``/cxr`` routes too (``enable_custom_route_auth``) and turns off
LangGraph Studio's bypass (``disable_studio_auth``). The UI replicas send the same token
(ui/remote.py). Unset, every caller is let in, as ``langgraph dev`` on loopback expects; the server
logs a warning at start-up.
"""

from __future__ import annotations

import hmac
import logging

from langgraph_sdk import Auth

from cxr_agent.settings import get_settings

log = logging.getLogger(__name__)

auth = Auth()


def expected_token() -> str | None:
    token = get_settings().server_token
    return token.get_secret_value() if token is not None and token.get_secret_value() else None


@auth.authenticate
async def authenticate(authorization: str | None) -> str:
    """The caller's identity, or 401 naming what is missing (never which part of a token was wrong)."""
    token = expected_token()
    if token is None:
        return "anonymous"
    scheme, _, given = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise Auth.exceptions.HTTPException(
            status_code=401, detail="this cxr-agent server needs 'Authorization: Bearer <CXR_AGENT_SERVER_TOKEN>'")
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise Auth.exceptions.HTTPException(status_code=401, detail="wrong server token")
    return "cxr-agent-client"
