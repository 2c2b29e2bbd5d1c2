#!/usr/bin/env bash
# Make sure a PostgreSQL server accepts trust connections on 127.0.0.1:${PGPORT:-5432}, for the
# tests of the PostgreSQL catalog/ledger profile. Idempotent: does nothing when one already answers.
#
# When none answers: installs Debian's `postgresql` package with apt-get if its binaries are missing,
# then initialises a throwaway cluster in ${SANYI_PG_DIR:-/var/tmp/sanyi-pg-$PGPORT} (trust auth,
# superuser `postgres`) and starts it listening on 127.0.0.1 only (no other interface, no unix
# socket in a shared directory). It does not touch the system's own clusters or their config.
#
#   tests/ensure_postgres.sh          # start (or confirm) the server
#   tests/ensure_postgres.sh stop     # stop a cluster this script started
set -euo pipefail

PGPORT="${PGPORT:-5432}"
DATA="${SANYI_PG_DIR:-/var/tmp/sanyi-pg-$PGPORT}"
ACTION="${1:-start}"

find_bin() {
  local dir
  dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  if [[ -n "$dir" && -x "$dir/initdb" ]]; then echo "$dir"; fi
}

as_owner() {
  # initdb and postgres refuse to run as root: use the package's `postgres` account then.
  if [[ "$(id -u)" == 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

ready() {
  local bin="$1"
  "$bin/pg_isready" -q -h 127.0.0.1 -p "$PGPORT"
}

BIN="$(find_bin)"

if [[ "$ACTION" == stop ]]; then
  if [[ -n "$BIN" && -f "$DATA/postmaster.pid" ]]; then
    as_owner "$BIN/pg_ctl" -D "$DATA" -m fast -w stop
  fi
  exit 0
fi

if [[ -n "$BIN" ]] && ready "$BIN"; then
  echo "PostgreSQL already accepting connections on 127.0.0.1:$PGPORT"
  exit 0
fi

if [[ -z "$BIN" ]]; then
  echo "installing Debian's postgresql package" >&2
  SUDO=()
  if [[ "$(id -u)" != 0 ]]; then SUDO=(sudo -n); fi
  # Debian's documented switch: no auto-created `main` cluster (with password auth) on our port.
  if [[ ! -e /etc/postgresql-common/createcluster.conf ]]; then
    "${SUDO[@]}" mkdir -p /etc/postgresql-common
    echo "create_main_cluster = false" | "${SUDO[@]}" tee /etc/postgresql-common/createcluster.conf >/dev/null
  fi
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends postgresql postgresql-client >/dev/null
  BIN="$(find_bin)"
  [[ -n "$BIN" ]] || { echo "postgresql installed but no initdb found" >&2; exit 1; }
  if ready "$BIN"; then
    echo "PostgreSQL (Debian's cluster) accepting connections on 127.0.0.1:$PGPORT"
    exit 0
  fi
fi

if [[ ! -f "$DATA/PG_VERSION" ]]; then
  mkdir -p "$DATA"
  if [[ "$(id -u)" == 0 ]]; then chown postgres:postgres "$DATA"; fi
  chmod 700 "$DATA"
  as_owner "$BIN/initdb" -D "$DATA" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >/dev/null
fi

# Sockets live in the data directory; TCP only on loopback.
as_owner "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w -t 60 start \
  -o "-c listen_addresses=127.0.0.1 -p $PGPORT -c unix_socket_directories=$DATA -c fsync=off"

for _ in $(seq 1 60); do
  if ready "$BIN"; then
    echo "PostgreSQL started on 127.0.0.1:$PGPORT (data in $DATA)"
    exit 0
  fi
  sleep 0.5
done
echo "PostgreSQL did not come up; see $DATA/server.log" >&2
exit 1
