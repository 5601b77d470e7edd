#!/usr/bin/env bash
# A throwaway PostgreSQL server on loopback for the query tests.
#
#   eval "$(.ci/postgres.sh)"      # start (or reuse) it; exports BRIDGEPERF_TEST_POSTGRES
#   .ci/postgres.sh stop           # stop it and remove its directory
#
# Idempotent: a second call finds the running server and prints the same exports. Installs
# PostgreSQL from the distribution's packages when initdb is missing. The server listens on
# 127.0.0.1 only (unix sockets in its own directory), trusts local connections, logs every
# statement (log_statement=all) to BRIDGEPERF_TEST_POSTGRES_LOG so tests can compare counts with
# what the server executed, and runs with fsync off: its data is disposable.
set -euo pipefail

base="${BRIDGEPERF_POSTGRES_DIR:-${TMPDIR:-/tmp}/bridgeperf-postgres-$(id -u)}"
db=bridgeperf
role=bridgeperf

say() { echo "postgres.sh: $*" >&2; }

find_bindir() {
    local candidate
    if command -v initdb >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v initdb)")"
        return 0
    fi
    candidate=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -n "$candidate" ] && [ -x "$candidate/initdb" ]; then
        echo "$candidate"
        return 0
    fi
    return 1
}

# Run a PostgreSQL binary as the cluster's owner: root may not run the server.
as_owner() {
    if [ "$(id -u)" = 0 ]; then
        if command -v runuser >/dev/null 2>&1; then
            runuser -u postgres -- "$@"
        else
            su postgres -s /bin/sh -c "$(printf '%q ' "$@")"
        fi
    else
        "$@"
    fi
}

if [ "${1:-}" = stop ]; then
    if [ -d "$base/data" ] && bindir=$(find_bindir); then
        as_owner "$bindir/pg_ctl" -D "$base/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$base"
    say "stopped"
    exit 0
fi

if ! bindir=$(find_bindir); then
    say "initdb not found: installing PostgreSQL from the distribution's packages"
    sudo=""
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null 2>&1 || { say "need root or sudo to install postgresql"; exit 1; }
        sudo="sudo"
    fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y -q postgresql >&2 || {
        $sudo apt-get update -q >&2
        $sudo apt-get install -y -q postgresql >&2
    }
    bindir=$(find_bindir) || { say "postgresql installed but initdb still not found"; exit 1; }
fi

# Reuse a server this script started before, if it is still up.
if [ -f "$base/env" ] && [ -d "$base/data" ] \
    && as_owner "$bindir/pg_ctl" -D "$base/data" status >/dev/null 2>&1; then
    cat "$base/env"
    exit 0
fi

# Start from scratch (a stale directory from a crashed run included).
if [ -d "$base/data" ]; then
    as_owner "$bindir/pg_ctl" -D "$base/data" -m immediate -w stop >/dev/null 2>&1 || true
fi
rm -rf "$base"
mkdir -p "$base/sock"
touch "$base/postgres.log"
chmod 755 "$base" "$base/sock"
chmod 644 "$base/postgres.log"
if [ "$(id -u)" = 0 ]; then
    chown -R postgres: "$base"
fi

as_owner "$bindir/initdb" -D "$base/data" -U "$role" --auth=trust -E UTF8 --locale=C \
    --no-sync >"$base/initdb.log" 2>&1 || { cat "$base/initdb.log" >&2; exit 1; }

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

options="-h 127.0.0.1 -p $port -k $base/sock -c log_statement=all -c fsync=off"
options="$options -c synchronous_commit=off -c full_page_writes=off -c max_connections=60"
if ! as_owner "$bindir/pg_ctl" -D "$base/data" -l "$base/postgres.log" -w -t 60 \
    -o "$options" start >/dev/null; then
    tail -n 30 "$base/postgres.log" >&2
    exit 1
fi
as_owner "$bindir/createdb" -h 127.0.0.1 -p "$port" -U "$role" "$db"

{
    echo "export BRIDGEPERF_TEST_POSTGRES=postgresql://$role@127.0.0.1:$port/$db"
    echo "export BRIDGEPERF_TEST_POSTGRES_LOG=$base/postgres.log"
} >"$base/env"
chmod 644 "$base/env"
say "PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') on 127.0.0.1:$port, data in $base"
cat "$base/env"
