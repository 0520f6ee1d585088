#!/bin/sh
# Make sure a throwaway PostgreSQL server for the tests answers, and print its URL as the
# last line on stdout. `make test` runs it and hands the URL to pytest.
#
#   AGENTFLOW_TEST_POSTGRES_URL="$(tests/ensure-postgres.sh | tail -1)"
#
# - It already answers on 127.0.0.1:$AGENTFLOW_PG_PORT (54329): make sure the `agentflow`
#   role and database exist, print the URL; never start a second server.
# - No PostgreSQL server binaries: on Debian, as root, install the postgresql package;
#   elsewhere, fail and say what to install.
# - Otherwise initdb a cluster in $AGENTFLOW_PG_DIR (/tmp/agentflow-pg-PORT; owned by the
#   `postgres` user when run as root, since initdb refuses root), trust auth, listening on
#   127.0.0.1 only, durability off (it is thrown away), start it detached (it outlives
#   make), and wait up to $AGENTFLOW_PG_WAIT_S seconds (60) for pg_isready.
#
# `tests/ensure-postgres.sh --answers` only says (exit status) whether a server answers;
# `--stop` stops the cluster in $AGENTFLOW_PG_DIR if it runs (`make test` stops the one it
# started).
set -eu
port="${AGENTFLOW_PG_PORT:-54329}"
dir="${AGENTFLOW_PG_DIR:-/tmp/agentflow-pg-$port}"
log="$dir.log"
wait_s="${AGENTFLOW_PG_WAIT_S:-60}"
url="postgresql://agentflow@127.0.0.1:$port/agentflow"

fail() {
  echo "ensure-postgres.sh: $*" >&2
  exit 1
}

. "$(dirname "$0")/../sandbox/apt.sh"

find_bindir() {
  if [ -n "${AGENTFLOW_PG_BINDIR:-}" ]; then
    echo "$AGENTFLOW_PG_BINDIR"
    return
  fi
  # Debian keeps each major version's server binaries off PATH.
  for candidate in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$candidate/initdb" ] && echo "$candidate" && return
  done
  if command -v initdb >/dev/null 2>&1; then
    dirname "$(command -v initdb)"
  fi
}

bindir="$(find_bindir)"
if [ -z "$bindir" ]; then
  apt_install postgresql \
    "no PostgreSQL server found; install it (Debian: apt-get install postgresql) or set AGENTFLOW_TEST_POSTGRES_URL"
  bindir="$(find_bindir)"
  [ -n "$bindir" ] || fail "installed postgresql but found no initdb under /usr/lib/postgresql"
fi

# The server and its files belong to an unprivileged user; root acts through `postgres`.
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || fail "running as root but there is no postgres user to own the cluster"
  as_owner() { runuser -u postgres -- "$@"; }
else
  as_owner() { "$@"; }
fi

answers() {
  # As the postgres role: a probe as an unknown role writes a FATAL line to the log.
  "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -t 2
}

running() {
  [ -f "$dir/PG_VERSION" ] && as_owner "$bindir/pg_ctl" status -D "$dir" >/dev/null 2>&1
}

wait_until_ready() {
  deadline=$(($(date +%s) + wait_s))
  until answers; do
    # Readiness of a server process we do not control: there is nothing to block on but polling.
    [ "$(date +%s)" -lt "$deadline" ] ||
      fail "PostgreSQL did not answer on 127.0.0.1:$port within ${wait_s}s (log: $log)"
    # pg_ctl -W returns before the server writes its pid file: only a FATAL line in a
    # log truncated at start means it is gone for good.
    if ! running && grep -q -E 'FATAL|PANIC' "$log" 2>/dev/null; then
      fail "PostgreSQL exited at start-up: $(grep -E 'FATAL|PANIC' "$log" | tail -n 1) (log: $log)"
    fi
    sleep 0.2
  done
}

sql() {
  "$bindir/psql" -X -q -t -A -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d postgres -c "$1"
}

ensure_database() {
  if [ -z "$(sql "SELECT 1 FROM pg_roles WHERE rolname = 'agentflow'")" ]; then
    sql "CREATE ROLE agentflow LOGIN CREATEDB" >/dev/null || fail "could not create the role agentflow"
  fi
  if [ -z "$(sql "SELECT 1 FROM pg_database WHERE datname = 'agentflow'")" ]; then
    sql "CREATE DATABASE agentflow OWNER agentflow" >/dev/null ||
      fail "could not create the database agentflow"
  fi
}

start_cluster() {
  if [ ! -f "$dir/PG_VERSION" ]; then
    # A half-made directory (initdb interrupted) cannot be started: make it again.
    rm -rf "$dir"
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$dir"; fi
    chmod 700 "$dir"
    as_owner "$bindir/initdb" -D "$dir" -U postgres --auth=trust --encoding=UTF8 \
      --locale=C >"$log" 2>&1 || fail "initdb failed: $(tail -n 1 "$log") (log: $log)"
    cat >>"$dir/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = ''
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
  fi
  : >"$log"
  if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$log"; fi
  echo "ensure-postgres.sh: starting PostgreSQL on 127.0.0.1:$port (data: $dir, log: $log)" >&2
  # pg_ctl detaches the server into its own session, so it outlives make.
  # fd 9 (the lock) is closed for it: the server must not hold the lock for its lifetime.
  as_owner "$bindir/pg_ctl" start -W -D "$dir" -l "$log" </dev/null >/dev/null 9>&- ||
    fail "pg_ctl start failed: $(tail -n 1 "$log") (log: $log)"
}

case "${1:-}" in
  --answers)
    answers
    exit
    ;;
  --stop)
    if running; then as_owner "$bindir/pg_ctl" stop -D "$dir" -m fast >/dev/null; fi
    exit 0
    ;;
  "") ;;
  *) fail "unknown option $1 (use --answers or --stop)" ;;
esac

if ! answers; then
  # Two callers at once (parallel make jobs) must not both initdb: the second waits here.
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$dir.lock"
    flock 9
  fi
  # A server of ours that is still starting is waited for, never started twice.
  running || start_cluster
  wait_until_ready
fi
ensure_database
echo "$url"
