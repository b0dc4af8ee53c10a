#!/usr/bin/env bash
# Run a command (the test suite) with $RPZTUNE_PG_URL set to the private test PostgreSQL server, and stop
# the server afterwards when this script started it: also when the command fails or is interrupted. A
# server that was already running, or a URL already given in $RPZTUNE_PG_URL, is left alone.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -n "${RPZTUNE_PG_URL:-}" ]; then exec "$@"; fi
SERVER=scripts/postgres-test-server.sh
trap '' INT TERM  # a start cut short could leave a server up that the stop below misses
if ! "$SERVER" status; then
  trap '"$SERVER" stop' EXIT
fi
RPZTUNE_PG_URL="$("$SERVER")" || exit 1
trap 'exit 130' INT
trap 'exit 143' TERM
export RPZTUNE_PG_URL
"$@"
