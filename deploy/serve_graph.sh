#!/usr/bin/env bash
# The graph server with no licence key: `langgraph dev` (LangGraph's in-memory runtime, one process)
# serving langgraph.json (the graph, server/app.py's routes, server/auth.py) with JOBS turns at once.
#
#   CXR_AGENT_SERVER_TOKEN=<service token> CXR_AGENT_SERVER_USERS=/etc/cxr-agent/users.toml \
#   CXR_AGENT_SERVER_JOBS=4 deploy/serve_graph.sh            (or: make serve-graph)
#
# JOBS: turns run at once (langgraph dev runs ONE without --n-jobs-per-worker); see README "Scaling out".
# A2A / MCP: off unless CXR_AGENT_SERVER_ENABLE_A2A=true / CXR_AGENT_SERVER_ENABLE_MCP=true (server/http_config.py).
# HOST: 127.0.0.1 by default; bind another address only behind a TLS-terminating proxy.
set -euo pipefail
cd "$(dirname "$0")/.."
HOST="${CXR_AGENT_SERVER_HOST:-127.0.0.1}"
PORT="${CXR_AGENT_SERVER_PORT:-2024}"
JOBS="${CXR_AGENT_SERVER_JOBS:-4}"
CLI="${LANGGRAPH_CLI:-.venv/bin/langgraph}"
[ -x "$CLI" ] || CLI="$(command -v langgraph || true)"
if [ -z "$CLI" ]; then
  echo "error: langgraph-cli not found: pip install -e '.[server]'" >&2; exit 2
fi
if ! [[ "$JOBS" =~ ^[1-9][0-9]*$ ]]; then
  echo "error: CXR_AGENT_SERVER_JOBS must be a positive whole number (got '$JOBS')" >&2; exit 2
fi
if [ -z "${CXR_AGENT_SERVER_USERS:-}" ] && [ "${CXR_AGENT_SERVER_AUTH_DISABLED:-false}" != "true" ]; then
  echo "note: CXR_AGENT_SERVER_USERS is not set: every holder of CXR_AGENT_SERVER_TOKEN sees every conversation" >&2
fi
case "$HOST" in
  127.*|localhost|::1) ;;
  *) echo "note: listening on $HOST: put a TLS-terminating proxy in front (conversations and images are PHI)" >&2 ;;
esac
# The config langgraph dev reads: langgraph.json with what settings decide (A2A and MCP stay off unless
# CXR_AGENT_SERVER_ENABLE_A2A / CXR_AGENT_SERVER_ENABLE_MCP say true): a new file in .langgraph_api/ (0700).
PYTHON="${CXR_AGENT_PYTHON:-$(dirname "$CLI")/python}"
[ -x "$PYTHON" ] || PYTHON="$(command -v python3)"
CONFIG="$("$PYTHON" -m server.http_config langgraph.json)"
# Two glibc malloc arenas: turns allocate from many threads, and per-thread arenas keep what they freed.
export MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX:-2}"
export LANGGRAPH_CLI_NO_ANALYTICS=1 LANGSMITH_TRACING="${LANGSMITH_TRACING:-false}"
exec "$CLI" dev --host "$HOST" --port "$PORT" --no-browser --no-reload --n-jobs-per-worker "$JOBS" --config "$CONFIG"
