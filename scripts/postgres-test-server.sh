#!/usr/bin/env bash
# A private PostgreSQL server for the tests.
#   postgres-test-server.sh [start]  start it (once) and print its URL
#   postgres-test-server.sh status   exit 0 when it answers, 1 otherwise (installs nothing)
#   postgres-test-server.sh stop     stop it (nothing to do when it is not running)
#   postgres-test-server.sh install  only install PostgreSQL when it is missing
# Installs Debian's postgresql when it is missing and we are root. Data lives in $RPZTUNE_PG_DIR (default
# /tmp/rpztune-pg-PORT). It listens on 127.0.0.1 and on the addresses in $RPZTUNE_PG_LISTEN (comma-separated,
# e.g. a test network namespace's veth addresses), trusting the clients of $RPZTUNE_PG_TRUST (a CIDR).
set -euo pipefail
ACTION="${1:-start}"
PORT="${RPZTUNE_PG_PORT:-55432}"
PGDIR="${RPZTUNE_PG_DIR:-/tmp/rpztune-pg-$PORT}"
LISTEN="127.0.0.1${RPZTUNE_PG_LISTEN:+,$RPZTUNE_PG_LISTEN}"
URL="postgresql://rpztune@127.0.0.1:$PORT/rpztune_test"

bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
running() { [ -n "$(bindir)" ] && as_pg "$(bindir)/pg_isready" -q -h 127.0.0.1 -p "$PORT"; }

case "$ACTION" in
  status) running; exit ;;
  stop)
    if [ -f "$PGDIR/postmaster.pid" ] && [ -n "$(bindir)" ]; then
      as_pg "$(bindir)/pg_ctl" -D "$PGDIR" -m fast -w stop >/dev/null || true
    fi
    exit 0 ;;
  start|install) ;;
  *) echo "usage: $0 [start|status|stop|install]" >&2; exit 2 ;;
esac

if [ -z "$(bindir)" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  else
    echo "postgresql is not installed (apt-get install postgresql)" >&2; exit 1
  fi
fi
BIN="$(bindir)"
[ "$ACTION" = install ] && exit 0

if ! running; then
  rm -f "$PGDIR/postmaster.pid"  # left by a server killed with its session: nothing answers on the port
  if [ ! -f "$PGDIR/PG_VERSION" ]; then
    mkdir -p "$PGDIR"
    [ "$(id -u)" = 0 ] && chown postgres "$PGDIR"
    as_pg "$BIN/initdb" -D "$PGDIR" -U rpztune -A trust >/dev/null
    if [ -n "${RPZTUNE_PG_TRUST:-}" ]; then
      echo "host all all $RPZTUNE_PG_TRUST trust" | as_pg tee -a "$PGDIR/pg_hba.conf" >/dev/null
    fi
  fi
  as_pg "$BIN/pg_ctl" -D "$PGDIR" -l "$PGDIR/server.log" -w \
    -o "-c listen_addresses=$LISTEN -p $PORT -k $PGDIR -c max_connections=200 -c fsync=off" start >/dev/null
fi
as_pg "$BIN/psql" -h 127.0.0.1 -p "$PORT" -U rpztune -d postgres -tAc \
  "SELECT 1 FROM pg_database WHERE datname='rpztune_test'" | grep -q 1 ||
  as_pg "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U rpztune rpztune_test
echo "$URL"
