#!/usr/bin/env bash
# Start the Prefect server (API + UI) in the foreground.
#
#   deploy/server.sh                      SQLite under $PREFECT_HOME (default ~/.prefect): one machine, tests, demos
#   PREFECT_API_DATABASE_CONNECTION_URL=postgresql+asyncpg://prefect:SECRET@db-host:5432/prefect deploy/server.sh
#                                         PostgreSQL: production (several workers, many runs, backups)
#
# HOST/PORT choose the listening address (default 127.0.0.1:4200; use 0.0.0.0 so GPU machines can
# reach it). Workers and CLIs then need PREFECT_API_URL=http://<this host>:<port>/api.
set -euo pipefail
HOST="${HOST:-127.0.0.1}"
PORT="${PORT:-4200}"
if [[ -n "${PREFECT_API_DATABASE_CONNECTION_URL:-}" ]]; then
  echo "database: ${PREFECT_API_DATABASE_CONNECTION_URL%%://*}://… (from PREFECT_API_DATABASE_CONNECTION_URL)" >&2
else
  echo "database: SQLite in ${PREFECT_HOME:-$HOME/.prefect} (set PREFECT_API_DATABASE_CONNECTION_URL for PostgreSQL)" >&2
fi
export PREFECT_SERVER_ANALYTICS_ENABLED="${PREFECT_SERVER_ANALYTICS_ENABLED:-false}"
exec prefect server start --host "$HOST" --port "$PORT"
