#!/usr/bin/env bash
# A PostgreSQL server in user space, for a sweep's store: no root, no system service. The way to run
# one on a cluster's login node (or any machine every worker reaches):
#
#   scripts/postgres_local.sh DIR [--port P] [--listen ADDR]
#   scripts/postgres_local.sh DIR --stop
#
# The first call creates the cluster in DIR (initdb) with a user named after you, a database
# `fcn_sweep`, and a random password in DIR/password (read by you only); later calls start it again.
# It listens on ADDR (default 127.0.0.1; `--listen '*'` for workers on other machines, which then
# authenticate with the password) and on a Unix socket in DIR. It prints the store URL without the
# password; give the password to workers by PGPASSWORD or ~/.pgpass. `--stop` stops it (pg_ctl stop).
#
# PostgreSQL refuses to run as root (initdb and pg_ctl both do). As root (a container, a fresh VM)
# this script refuses at once, before creating anything; run it as an unprivileged user, e.g. Debian's
# `postgres`:  runuser -u postgres -- scripts/postgres_local.sh /var/tmp/pg ...  (and --stop the same way).
set -euo pipefail

usage() { echo "usage: $0 DIR [--port P] [--listen ADDR] | DIR --stop" >&2; exit 2; }
[ $# -ge 1 ] || usage
dir=$1; shift
port=5432; listen=127.0.0.1; stop=0
while [ $# -gt 0 ]; do
    case $1 in
        --port) [ $# -ge 2 ] || usage; port=$2; shift 2 ;;
        --listen) [ $# -ge 2 ] || usage; listen=$2; shift 2 ;;
        --stop) stop=1; shift ;;
        *) usage ;;
    esac
done
if [ "$(id -u)" = 0 ]; then
    echo "$0: PostgreSQL will not run as root; run this as an unprivileged user, e.g. runuser -u postgres -- $0 $dir ... (DIR writable by that user)" >&2
    exit 2
fi
if ! command -v initdb >/dev/null; then  # Debian keeps the server binaries off PATH
    bin=$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)
    [ -n "$bin" ] || { echo "$0: PostgreSQL's initdb not found; install PostgreSQL (Debian: postgresql)" >&2; exit 2; }
    PATH="$bin:$PATH"
fi
if [ "$stop" = 1 ]; then
    [ -f "$dir/data/PG_VERSION" ] || { echo "$0: $dir holds no server made by this script (no $dir/data)" >&2; exit 2; }
    pg_ctl -D "$dir/data" -w stop >/dev/null
    echo "stopped the server in $dir"
    exit 0
fi
user=$(id -un)
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
if [ ! -f "$dir/data/PG_VERSION" ]; then
    umask 077
    head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$dir/password.tmp"
    initdb -D "$dir/data" -U "$user" --pwfile="$dir/password.tmp" --auth-local=trust --auth-host=scram-sha-256 \
        -E UTF8 >"$dir/initdb.log"
    mv "$dir/password.tmp" "$dir/password"
    if [ "$listen" != 127.0.0.1 ]; then  # other machines: password authentication from anywhere
        echo "host all all 0.0.0.0/0 scram-sha-256" >> "$dir/data/pg_hba.conf"
        echo "host all all ::/0 scram-sha-256" >> "$dir/data/pg_hba.conf"
    fi
fi
if ! pg_ctl -D "$dir/data" status >/dev/null 2>&1; then
    pg_ctl -D "$dir/data" -l "$dir/server.log" -w -o "-p $port -k $dir -c listen_addresses=$listen -c max_connections=200" \
        start >/dev/null
fi
createdb -h "$dir" -p "$port" -U "$user" fcn_sweep 2>/dev/null || true
host=$listen; [ "$host" != "*" ] || host=$(hostname -f 2>/dev/null || hostname)
echo "postgresql://$user@$host:$port/fcn_sweep"
