"""The langgraph.json a server starts with: the repo's file, with what settings decide filled in.

`langgraph dev` reads its HTTP options (which routes exist) from the config file, not from the
environment, so the routes that only a setting may turn on are decided here: the repo's
langgraph.json keeps LangGraph's A2A (``/a2a/{assistant}``) and MCP (``/mcp``) routes off, and
``CXR_AGENT_SERVER_ENABLE_A2A`` / ``CXR_AGENT_SERVER_ENABLE_MCP`` turn each on. Either runs behind the
same custom auth as every other route (a token, per-user threads: server/auth.py). The written file
names every path absolutely, so it works from any directory. deploy/serve_graph.sh runs

    CONFIG="$(python -m server.http_config langgraph.json)"   # a new owner-only file; its path printed
"""

from __future__ import annotations

import copy
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cxr_agent.settings import Settings


def _absolute(spec: str, root: Path) -> str:
    path, sep, attr = spec.partition(":")
    return f"{(root / path).resolve()}{sep}{attr}"


def effective_config(base: dict[str, Any], root: Path, settings: Settings) -> dict[str, Any]:
    """``base`` (a parsed langgraph.json whose paths are relative to ``root``) with absolute paths and the
    A2A / MCP switches taken from ``settings``."""
    config = copy.deepcopy(base)
    config["dependencies"] = [str((root / d).resolve()) for d in config.get("dependencies", [])]
    config["graphs"] = {name: _absolute(spec, root) for name, spec in config.get("graphs", {}).items()}
    http = config.setdefault("http", {})
    if "app" in http:
        http["app"] = _absolute(http["app"], root)
    if "path" in config.get("auth", {}):
        config["auth"]["path"] = _absolute(config["auth"]["path"], root)
    http["disable_a2a"] = not settings.server_enable_a2a
    http["disable_mcp"] = not settings.server_enable_mcp
    return config


def write_effective_config(base_path: Path, out: Path, settings: Settings) -> Path:
    """Write the effective config for ``base_path`` to ``out`` (owner-only) and return ``out``."""
    config = effective_config(json.loads(base_path.read_text()), base_path.resolve().parent, settings)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(config, fh, indent=2)
    return out


STATE_DIR = Path(".langgraph_api")
"""Where a started server's effective config goes without an explicit path: `langgraph dev`'s own
owner-only state dir in the working directory (one file per start, so servers started side by side
never read each other's)."""


def _new_file(folder: Path) -> Path:
    folder.mkdir(mode=0o700, exist_ok=True)
    os.chmod(folder, 0o700)
    fd, name = tempfile.mkstemp(prefix="langgraph.", suffix=".json", dir=folder)
    os.close(fd)
    return Path(name)


def main(argv: list[str] | None = None) -> int:
    """``<langgraph.json> [<out.json>]``: write the effective config (to a new file under ``STATE_DIR``
    without ``<out.json>``) and print its path."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (1, 2):
        print("usage: python -m server.http_config <langgraph.json> [<out.json>]", file=sys.stderr)
        return 2
    from pydantic import ValidationError

    from cxr_agent.settings import Settings

    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"error: the server settings are not valid:\n{exc}", file=sys.stderr)
        return 2
    out = write_effective_config(Path(args[0]), Path(args[1]) if len(args) == 2 else _new_file(STATE_DIR), settings)
    print(out)
    for route, on in (("A2A", settings.server_enable_a2a), ("MCP", settings.server_enable_mcp)):
        if on:
            print(f"note: the {route} route is on (CXR_AGENT_SERVER_ENABLE_{route}): it answers token holders, "
                  "each seeing only their own threads", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
