"""Who may use the graph server, and what each caller may see (LangGraph custom auth).

The server holds every conversation (replies, findings) and every uploaded study, so a deployment
shared beyond one machine must know who is calling and show each caller only their own work.
``langgraph.json`` points LangGraph Server at ``auth`` below, applies it to our ``/cxr`` routes too
(``enable_custom_route_auth``) and turns off LangGraph Studio's bypass (``disable_studio_auth``).

Identities (server/identities.py):

- ``CXR_AGENT_SERVER_TOKEN``: the **service** identity. The server's own in-process client
  (retention, ``DELETE /cxr/threads``) presents it; it sees and may delete every thread.
- ``CXR_AGENT_SERVER_USERS``: an owner-only file mapping token hashes to users; a ``gateway`` entry
  (a UI replica that signs people in with OIDC) names the signed-in user in ``X-Cxr-User``, and may pass
  the display name and organisation from that user's OIDC claims in ``X-Cxr-User-Name`` and
  ``X-Cxr-User-Org`` (percent-encoded UTF-8; read from a gateway only, never from a user's own token).
- Neither set: one anonymous caller with full access, as ``langgraph dev`` on loopback expects;
  the server logs a warning at start-up. Otherwise no identity, no access (401).

Ownership: threads, runs and crons get ``metadata.owner`` = the caller's id when created, and every
read, search, update or delete is filtered to that owner (the service identity is not filtered);
store items live under a namespace starting with the owner's id; assistants (the served graph) are
readable by all and changed only by the service identity. A run may name a ``study_id`` only if
its caller uploaded that study (server/ownership.py), so a guessed pixel hash opens nothing.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import Any

from langgraph_sdk import Auth

from cxr_agent.settings import get_settings
from server.identities import SERVICE, USER_ID, Identity, IdentityFileError, hash_token, load_users

log = logging.getLogger(__name__)

auth = Auth()

OWNER = "owner"
"""The metadata key holding the id of the identity that created a thread, run or cron."""
GATEWAY = "gateway"
USER_HEADER = "x-cxr-user"
USER_NAME_HEADER = "x-cxr-user-name"
USER_ORG_HEADER = "x-cxr-user-org"
MAX_CLAIM_CHARS = 200
SERVICE_ID = "cxr-agent-service"
ANONYMOUS = Identity("anonymous", "anonymous", role=SERVICE)
_CREATING = {"create", "create_run", "update"}


def expected_token() -> str | None:
    token = get_settings().server_token
    return token.get_secret_value() if token is not None and token.get_secret_value() else None


def _unauthorized(detail: str) -> Auth.exceptions.HTTPException:
    return Auth.exceptions.HTTPException(status_code=401, detail=detail)


def _header(headers: dict[Any, Any], name: str) -> str | None:
    value = headers.get(name.encode()) if headers else None
    if value is None and headers:
        value = headers.get(name)
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _claim(headers: dict[Any, Any], name: str) -> str:
    """A gateway's percent-encoded claim header as text: printable, trimmed, at most MAX_CLAIM_CHARS."""
    from urllib.parse import unquote

    text = unquote(_header(headers, name) or "", errors="replace")
    return "".join(c for c in text if c.isprintable()).strip()[:MAX_CLAIM_CHARS]


def identify(authorization: str | None, headers: dict[Any, Any] | None = None) -> Identity:
    """The caller's identity from its bearer token; raises 401 naming what is missing or wrong
    (never which part of a token was wrong), 503 when the users file is unusable."""
    settings = get_settings()
    service_token = expected_token()
    if service_token is None and settings.server_users is None:
        if not settings.server_auth_disabled:  # an unset or empty token is not "no auth"
            raise Auth.exceptions.HTTPException(
                status_code=503, detail="this server has no CXR_AGENT_SERVER_TOKEN; set one, or "
                                        "CXR_AGENT_SERVER_AUTH_DISABLED=true to run it open")
        return ANONYMOUS
    scheme, _, given = (authorization or "").strip().partition(" ")
    given = given.strip()
    if scheme.lower() != "bearer" or not given:
        raise _unauthorized("this cxr-agent server needs 'Authorization: Bearer <your token>' "
                            "(CXR_AGENT_SERVER_TOKEN on the client)")
    if service_token is not None and hmac.compare_digest(given.encode(), service_token.encode()):
        return Identity(SERVICE_ID, "cxr-agent service", role=SERVICE)
    if settings.server_users is None:
        raise _unauthorized("wrong server token")
    try:
        users = load_users(settings.server_users)
    except IdentityFileError as exc:
        log.error("cannot admit anyone: %s", exc)
        raise Auth.exceptions.HTTPException(status_code=503, detail="the server's users file is unusable; "
                                                                    "see the server log") from None
    who = users.get(hash_token(given))
    if who is None:
        raise _unauthorized("wrong server token")
    if who.role != "gateway":
        return who
    claimed = (_header(headers or {}, USER_HEADER) or "").strip()
    if not claimed:
        return who  # the gateway itself: it may ask /cxr/health, nothing else (owner_only refuses it)
    if not USER_ID.match(claimed):
        raise _unauthorized(f"a gateway must name the signed-in user in {USER_HEADER!r} "
                            "with 1-128 of letters, digits and ._@:+-")
    # the signed-in user's own claims, as the gateway read them from the login; else the gateway's entry
    name = _claim(headers or {}, USER_NAME_HEADER) or claimed
    return Identity(claimed, name, _claim(headers or {}, USER_ORG_HEADER) or who.org, "user")


@auth.authenticate
async def authenticate(authorization: str | None, headers: dict) -> dict[str, object]:
    """The caller as LangGraph's auth user (``identity`` = owner id, ``permissions`` = [role])."""
    return identify(authorization, headers).auth_user()


def is_service(ctx: Auth.types.AuthContext) -> bool:
    return SERVICE in (ctx.permissions or [])


@auth.on
async def owner_only(ctx: Auth.types.AuthContext, value: Any) -> Any:
    """Threads, runs, crons: stamp the owner on create; filter every other action to the owner."""
    if GATEWAY in (ctx.permissions or []):
        raise Auth.exceptions.HTTPException(status_code=403, detail=f"a gateway acts only for a user it names in "
                                                                    f"{USER_HEADER!r}")
    if ctx.resource == "assistants":
        return _assistants(ctx)
    if ctx.resource == "store":
        return _store(ctx, value)
    owner = ctx.user.identity
    if ctx.action in _CREATING and isinstance(value, dict):
        metadata = value.get("metadata")
        if not isinstance(metadata, dict):
            metadata = value["metadata"] = {}
        if not is_service(ctx) or ctx.action != "update":
            metadata[OWNER] = owner  # a user cannot hand a thread to someone else
    if ctx.action == "create_run" and not is_service(ctx):
        await _check_study(owner, value)
    return None if is_service(ctx) else {OWNER: owner}


def _assistants(ctx: Auth.types.AuthContext) -> bool:
    """The served graph is everyone's to run; only the service identity may change assistants."""
    return ctx.action in ("read", "search") or is_service(ctx)


def _store(ctx: Auth.types.AuthContext, value: Any) -> bool:
    """A user's store items live under a namespace that starts with its own id."""
    if is_service(ctx):
        return True
    owner = ctx.user.identity
    namespace = tuple(value.get("namespace") or ())
    if not namespace and ctx.action in ("search", "list_namespaces"):
        value["namespace"] = (owner,)
        return True
    if not namespace or namespace[0] != owner:
        raise Auth.exceptions.HTTPException(status_code=403,
                                            detail=f"store namespaces of this caller start with {owner!r}")
    return True


async def _check_study(owner: str, value: Any) -> None:
    """Refuse a run naming a study (``study_id``, the ``prior_study_id`` it compares with, or any study of its
    ``pairs``) its caller did not upload (403 naming the key, before anything runs)."""
    kwargs = value.get("kwargs") if isinstance(value, dict) else None
    run_input = kwargs.get("input") if isinstance(kwargs, dict) else None
    if not isinstance(run_input, dict):
        return
    from server.ownership import uploaded_by

    named = [(key, run_input.get(key)) for key in ("study_id", "prior_study_id")]
    named += _pair_studies(run_input.get("pairs"))
    for key, study_id in named:
        if not study_id:
            continue
        if not isinstance(study_id, str) or not await asyncio.to_thread(uploaded_by, get_settings(), study_id, owner):
            raise Auth.exceptions.HTTPException(
                status_code=403, detail=f"{key}: this study was not uploaded by you: upload the file to "
                                        "POST /cxr/studies first")


PAIR_KEYS = ("prior_key", "current_key", "thread_keys")
"""What only the server writes into a pair: patient keys (POST /cxr/studies/pair), never a run's input."""


def _pair_studies(pairs: Any) -> list[tuple[str, Any]]:
    """(input key, study id) of every study a run's ``pairs`` names; 403 for a pair carrying patient keys
    (a client could make them match) or one that is not a mapping of pairs."""
    if pairs is None:
        return []
    if not isinstance(pairs, dict) or not all(isinstance(p, dict) for p in pairs.values()):
        raise Auth.exceptions.HTTPException(status_code=403, detail="pairs: must map a current study id to its pair")
    out: list[tuple[str, Any]] = []
    for current, pair in pairs.items():
        given = [k for k in PAIR_KEYS if pair.get(k)]
        if given:
            raise Auth.exceptions.HTTPException(
                status_code=403, detail=f"pairs.{str(current)[:80]}.{given[0]}: patient keys are made by the server "
                                        "from the headers: upload both files to POST /cxr/studies/pair")
        out += [(f"pairs.{str(current)[:80]}", current), (f"pairs.{str(current)[:80]}.study_id", pair.get("study_id")),
                (f"pairs.{str(current)[:80]}.prior_study_id", pair.get("prior_study_id"))]
    return out
