"""Who is calling the graph server: bearer tokens mapped to people, from an owner-only file.

``CXR_AGENT_SERVER_USERS`` names a TOML file of ``[[user]]`` tables::

    [[user]]
    id = "dr-lee"                 # the owner recorded on threads, runs and uploads
    name = "Dr Lee"
    org = "radiology"
    token_sha256 = "<64 hex>"     # sha256 of the bearer token; the token itself is never stored
    role = "user"                 # "user" (sees only what it created), "service" (sees everything:
                                  # retention, forget), "gateway" (a UI replica that signs users in
                                  # itself and names them in the X-Cxr-User header; their name and
                                  # organisation from the login in X-Cxr-User-Name / X-Cxr-User-Org,
                                  # this entry's org when it sends none)

The file holds the keys to every conversation, so it must be owner-only (mode 0600 or stricter);
a readable-by-others file is refused rather than trusted. Tokens are compared by their sha256, so
neither logs nor this file ever hold one. ``python -m server.identities add --id dr-lee --name "Dr
Lee"`` appends an entry and prints its token once. The file is re-read when it changes, so adding
or revoking a user needs no restart.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import secrets
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tomllib

Role = Literal["user", "service", "gateway"]
ROLES: tuple[Role, ...] = ("user", "service", "gateway")
SERVICE = "service"
"""The permission a service identity carries: it may see and delete every thread."""
USER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@:+-]{0,127}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class IdentityFileError(ValueError):
    """The users file is missing, readable by others, or malformed (the message names which entry)."""


@dataclass(frozen=True)
class Identity:
    """One caller: what the server records as owner, and whether it may see everything."""

    id: str
    name: str = ""
    org: str = ""
    role: Role = "user"

    @property
    def is_service(self) -> bool:
        return self.role == SERVICE

    def auth_user(self) -> dict[str, object]:
        """The LangGraph auth user: ``identity`` is the owner id; ``permissions`` say the role."""
        return {"identity": self.id, "display_name": self.name or self.id, "org": self.org,
                "is_authenticated": True, "permissions": [self.role]}


def hash_token(token: str) -> str:
    return hashlib.sha256(token.strip().encode()).hexdigest()


def check_private(path: Path) -> None:
    """Refuse a users file that is not a regular file, or that group or others may read or write."""
    try:
        st = path.stat()
    except OSError as exc:
        raise IdentityFileError(f"users file {path}: {exc.strerror or type(exc).__name__}") from None
    if not stat.S_ISREG(st.st_mode):
        raise IdentityFileError(f"users file {path} is not a regular file")
    if st.st_mode & 0o077:
        raise IdentityFileError(f"users file {path} has mode {stat.S_IMODE(st.st_mode):04o}: it holds the keys "
                                f"to every conversation, make it owner-only (chmod 600 {path})")


def parse_users(text: str, *, source: str = "users file") -> dict[str, Identity]:
    """token sha256 -> Identity, validated: every field named, ids and token hashes unique."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise IdentityFileError(f"{source}: not valid TOML ({exc})") from None
    unknown = set(data) - {"user"}
    if unknown:
        raise IdentityFileError(f"{source}: unknown table(s) {sorted(unknown)}; entries are [[user]] tables")
    entries = data.get("user", [])
    if not isinstance(entries, list):
        raise IdentityFileError(f"{source}: 'user' must be an array of tables ([[user]])")
    by_hash: dict[str, Identity] = {}
    ids: set[str] = set()
    for n, entry in enumerate(entries, 1):
        where = f"{source}: [[user]] #{n}"
        extra = set(entry) - {"id", "name", "org", "token_sha256", "role"}
        if extra:
            raise IdentityFileError(f"{where}: unknown key(s) {sorted(extra)}")
        uid, digest = entry.get("id"), entry.get("token_sha256")
        role = entry.get("role", "user")
        if not isinstance(uid, str) or not USER_ID.match(uid):
            raise IdentityFileError(f"{where}: 'id' must be 1-128 of letters, digits and ._@:+- (got {uid!r})")
        if not isinstance(digest, str) or not _HEX64.match(digest.lower()):
            raise IdentityFileError(f"{where} ({uid}): 'token_sha256' must be 64 hex digits (sha256 of the token)")
        if role not in ROLES:
            raise IdentityFileError(f"{where} ({uid}): 'role' must be one of {', '.join(ROLES)} (got {role!r})")
        for key in ("name", "org"):
            if not isinstance(entry.get(key, ""), str):
                raise IdentityFileError(f"{where} ({uid}): '{key}' must be a string")
        if uid in ids:
            raise IdentityFileError(f"{where}: id {uid!r} appears twice")
        if digest.lower() in by_hash:
            raise IdentityFileError(f"{where} ({uid}): same token as {by_hash[digest.lower()].id!r}")
        ids.add(uid)
        by_hash[digest.lower()] = Identity(uid, entry.get("name", ""), entry.get("org", ""), role)
    return by_hash


_CACHE: dict[Path, tuple[tuple[int, int, int], dict[str, Identity]]] = {}


def load_users(path: Path) -> dict[str, Identity]:
    """The users file's entries (re-read when its size, mtime or mode changes)."""
    check_private(path)
    st = path.stat()
    key = (st.st_mtime_ns, st.st_size, st.st_mode)
    cached = _CACHE.get(path)
    if cached is not None and cached[0] == key:
        return cached[1]
    users = parse_users(path.read_text(encoding="utf-8"), source=str(path))
    _CACHE[path] = (key, users)
    return users


def add_user(path: Path, uid: str, *, name: str = "", org: str = "", role: Role = "user") -> str:
    """Append a user to the file (created owner-only) and return its new token (shown once)."""
    token = secrets.token_urlsafe(32)
    existing = path.read_text(encoding="utf-8") if path.exists() else ""
    if existing:
        check_private(path)
    entry = (f'\n[[user]]\nid = "{uid}"\nname = {_toml_str(name)}\norg = {_toml_str(org)}\n'
             f'role = "{role}"\ntoken_sha256 = "{hash_token(token)}"\n')
    parse_users(existing + entry, source=str(path))  # refuse a bad id or a duplicate before writing
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as out:
        out.write(entry)
    os.chmod(path, 0o600)
    return token


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.identities", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    add = sub.add_parser("add", help="add a user and print its token once")
    add.add_argument("--file", type=Path, default=None, help="users file (default: $CXR_AGENT_SERVER_USERS)")
    add.add_argument("--id", required=True)
    add.add_argument("--name", default="")
    add.add_argument("--org", default="")
    add.add_argument("--role", choices=ROLES, default="user")
    args = parser.parse_args(argv)
    path = args.file or (Path(os.environ["CXR_AGENT_SERVER_USERS"]) if os.environ.get("CXR_AGENT_SERVER_USERS") else None)
    if path is None:
        parser.error("--file or CXR_AGENT_SERVER_USERS names the users file")
    try:
        token = add_user(path, args.id, name=args.name, org=args.org, role=args.role)
    except IdentityFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
