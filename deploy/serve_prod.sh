#!/usr/bin/env bash
# The production graph server, no licence key: server/standalone (the graph, server/app.py's routes and
# server/auth.py's rules) with threads, runs, the run queue and checkpoints in Postgres; WORKERS processes,
# each running JOBS turns at once.
#
#   CXR_AGENT_CHECKPOINTER_URL='postgresql://cxr:SECRET@db-host:5432/cxr_agent?sslmode=require' \
#   CXR_AGENT_SERVER_TOKEN=<service token> CXR_AGENT_SERVER_USERS=/etc/cxr-agent/users.toml \
#   CXR_AGENT_SERVER_JOBS=4 CXR_AGENT_SERVER_WORKERS=2 deploy/serve_prod.sh   (or: CXR_AGENT_SERVER_WORKERS=2 make serve-prod JOBS=4)
#
# Any number of processes, here or on other machines, may serve one database: they share its run queue.
# CXR_AGENT_SERVER_RUN_LEASE_S (60): a run whose process died is ended as an error after this long.
# See README "Scaling out".
# HOST: 127.0.0.1 by default; bind another address only behind a TLS-terminating proxy.
set -euo pipefail
cd "$(dirname "$0")/.."
HOST="${CXR_AGENT_SERVER_HOST:-127.0.0.1}"
PORT="${CXR_AGENT_SERVER_PORT:-2024}"
JOBS="${CXR_AGENT_SERVER_JOBS:-4}"
WORKERS="${CXR_AGENT_SERVER_WORKERS:-1}"
LEASE="${CXR_AGENT_SERVER_RUN_LEASE_S:-60}"
PYTHON="${CXR_AGENT_PYTHON:-.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON="$(command -v python3)"
if ! [[ "$JOBS" =~ ^[1-9][0-9]*$ ]]; then
  echo "error: CXR_AGENT_SERVER_JOBS must be a positive whole number (got '$JOBS')" >&2; exit 2
fi
if ! [[ "$WORKERS" =~ ^[1-9][0-9]*$ ]]; then
  echo "error: CXR_AGENT_SERVER_WORKERS must be a positive whole number (got '$WORKERS')" >&2; exit 2
fi
if ! [[ "$LEASE" =~ ^[0-9]+$ ]] || [ "$LEASE" -lt 3 ] || [ "$LEASE" -gt 3600 ]; then
  echo "error: CXR_AGENT_SERVER_RUN_LEASE_S must be a whole number of seconds from 3 to 3600 (got '$LEASE')" >&2; exit 2
fi
case "${CXR_AGENT_CHECKPOINTER_URL:-}" in
  postgresql://*|postgres://*) ;;
  *) echo "error: CXR_AGENT_CHECKPOINTER_URL must name the Postgres database (postgresql://user:password@host:5432/db)" >&2
     exit 2 ;;
esac
if [ -z "${CXR_AGENT_SERVER_USERS:-}" ] && [ "${CXR_AGENT_SERVER_AUTH_DISABLED:-false}" != "true" ]; then
  echo "note: CXR_AGENT_SERVER_USERS is not set: every holder of CXR_AGENT_SERVER_TOKEN sees every conversation" >&2
fi
case "$HOST" in
  127.*|localhost|::1) ;;
  *) echo "note: listening on $HOST: put a TLS-terminating proxy in front (conversations and images are PHI)" >&2 ;;
esac
# Two glibc malloc arenas: turns allocate from many threads, and per-thread arenas keep what they freed.
export MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX:-2}" LANGSMITH_TRACING="${LANGSMITH_TRACING:-false}"
exec "$PYTHON" -m server.standalone --host "$HOST" --port "$PORT" --jobs "$JOBS" --workers "$WORKERS" \
  --run-lease-s "$LEASE"
