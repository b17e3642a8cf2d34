"""Several identities against one real LangGraph Server: a users file of bearer-token users, and each caller's
SDK client, HTTP client and study upload, so an ownership test reads as who does what."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
from langgraph_server import LangGraphServer, langgraph_dev

from server.identities import hash_token


@contextmanager
def multi_user_server(work: Path, service: str, tokens: Mapping[str, str],
                      roles: Mapping[str, str] | None = None) -> Iterator[LangGraphServer]:
    """Serve the graph with the service token and an owner-only users file of `tokens` (user id -> token), each
    with its role from `roles` (``user`` when not named)."""
    users = work / "users.toml"
    users.write_text("".join(
        f'[[user]]\nid = "{uid}"\nrole = "{(roles or {}).get(uid, "user")}"\ntoken_sha256 = "{hash_token(t)}"\n'
        for uid, t in tokens.items()))
    users.chmod(0o600)
    with langgraph_dev(work, {"CXR_AGENT_SERVER_TOKEN": service, "CXR_AGENT_SERVER_USERS": str(users)}) as srv:
        yield srv


class Callers:
    """Clients for ``"service"`` or a user id of `tokens`, each sending that caller's bearer token."""

    def __init__(self, service: str, tokens: Mapping[str, str]) -> None:
        self.service, self.tokens = service, tokens

    def headers(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.service if who == 'service' else self.tokens[who]}"}

    def sdk(self, server: LangGraphServer, who: str):
        from langgraph_sdk import get_sync_client

        return get_sync_client(url=server.url, api_key=None, headers=self.headers(who))

    def http(self, server: LangGraphServer, who: str) -> httpx.Client:
        return httpx.Client(base_url=server.url, headers=self.headers(who), timeout=60)

    def upload(self, server: LangGraphServer, who: str, path: Path) -> str:
        """Uploads the image at `path` as `who`; returns its study id."""
        with self.http(server, who) as http:
            r = http.post("/cxr/studies", content=path.read_bytes(), headers={"x-cxr-file-type": path.suffix[1:]})
        assert r.status_code == 201, r.text
        return r.json()["study_id"]
