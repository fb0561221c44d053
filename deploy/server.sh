#!/usr/bin/env bash
# Start the Prefect server (API + UI) in the foreground.
#
#   deploy/server.sh                      SQLite under $PREFECT_HOME (default ~/.prefect): one machine, tests, demos
#   PREFECT_API_DATABASE_CONNECTION_URL=postgresql+asyncpg://prefect:SECRET@db-host:5432/prefect deploy/server.sh
#                                         PostgreSQL: production (several workers, many runs, backups)
#
# HOST/PORT choose the listening address (default 127.0.0.1:4200; use 0.0.0.0 so GPU machines can
# reach it). Workers and CLIs then need PREFECT_API_URL=http://<this host>:<port>/api.
# PREFECT_UI_URL is the address that links in notifications point at (default: this host and port).
#
# Once per server, after it is up: deploy/pool.sh, then python deploy/automations.py (zombie-run
# detection and the failed-night notification; docs/operations.md section 9).
set -euo pipefail
HOST="${HOST:-127.0.0.1}"
PORT="${PORT:-4200}"
if [[ -z "${PREFECT_UI_URL:-}" ]]; then
  ui_host="$HOST"
  [[ "$HOST" == "0.0.0.0" ]] && ui_host="$(hostname -f 2>/dev/null || hostname)"
  export PREFECT_UI_URL="http://$ui_host:$PORT"
fi
if [[ -n "${PREFECT_API_DATABASE_CONNECTION_URL:-}" ]]; then
  echo "database: ${PREFECT_API_DATABASE_CONNECTION_URL%%://*}://… (from PREFECT_API_DATABASE_CONNECTION_URL)" >&2
else
  echo "database: SQLite in ${PREFECT_HOME:-$HOME/.prefect} (set PREFECT_API_DATABASE_CONNECTION_URL for PostgreSQL)" >&2
fi
export PREFECT_SERVER_ANALYTICS_ENABLED="${PREFECT_SERVER_ANALYTICS_ENABLED:-false}"
exec prefect server start --host "$HOST" --port "$PORT"
