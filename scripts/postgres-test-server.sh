#!/usr/bin/env bash
# Start (once) a private PostgreSQL server on loopback for the tests and print its URL.
# Installs Debian's postgresql when it is missing and we are root. Data lives in $PGDIR (default /tmp).
set -euo pipefail
PORT="${RPZTUNE_PG_PORT:-55432}"
PGDIR="${RPZTUNE_PG_DIR:-/tmp/rpztune-pg-$PORT}"
URL="postgresql://rpztune@127.0.0.1:$PORT/rpztune_test"

bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
if [ -z "$(bindir)" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  else
    echo "postgresql is not installed (apt-get install postgresql)" >&2; exit 1
  fi
fi
BIN="$(bindir)"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

if ! as_pg "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; then
  rm -f "$PGDIR/postmaster.pid"  # left by a server killed with its session: nothing answers on the port
  if [ ! -f "$PGDIR/PG_VERSION" ]; then
    mkdir -p "$PGDIR"
    [ "$(id -u)" = 0 ] && chown postgres "$PGDIR"
    as_pg "$BIN/initdb" -D "$PGDIR" -U rpztune -A trust >/dev/null
  fi
  as_pg "$BIN/pg_ctl" -D "$PGDIR" -l "$PGDIR/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $PORT -k $PGDIR -c max_connections=200 -c fsync=off" start >/dev/null
fi
as_pg "$BIN/psql" -h 127.0.0.1 -p "$PORT" -U rpztune -d postgres -tAc \
  "SELECT 1 FROM pg_database WHERE datname='rpztune_test'" | grep -q 1 ||
  as_pg "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U rpztune rpztune_test
echo "$URL"
