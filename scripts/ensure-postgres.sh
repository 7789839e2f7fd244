#!/usr/bin/env bash
# Make sure the PostgreSQL server binaries (initdb, pg_ctl, postgres) are installed, for the tests
# that start a throwaway cluster (tests/support/postgres.py), and libfaketime (Debian's `faketime`),
# which the replica fault tests use to run one replica with a clock 60 s fast. Idempotent: what is
# present is reported and left alone; what is missing is installed with apt-get (as root, or
# through sudo), PostgreSQL without creating or starting the system's default cluster.
#
# Looks where the tests look: $BK_OTEL_PG_BIN, pg_ctl on PATH, /usr/local/bin,
# /usr/lib/postgresql/<version>/bin.
set -euo pipefail

say() { printf 'ensure-postgres: %s\n' "$*"; }

has_tools() {
  local dir=$1
  [ -n "$dir" ] && [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] && [ -x "$dir/postgres" ]
}

find_bindir() {
  local candidates=() dir
  [ -n "${BK_OTEL_PG_BIN:-}" ] && candidates+=("$BK_OTEL_PG_BIN")
  if command -v pg_ctl >/dev/null 2>&1; then
    candidates+=("$(dirname "$(readlink -f "$(command -v pg_ctl)")")")
  fi
  candidates+=(/usr/local/bin)
  # newest version first
  while IFS= read -r dir; do candidates+=("$dir"); done < <(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4,4 -V -r)
  for dir in "${candidates[@]}"; do
    if has_tools "$dir"; then
      printf '%s\n' "$dir"
      return 0
    fi
  done
  return 1
}

find_faketime() {
  local lib
  command -v faketime >/dev/null 2>&1 || return 1
  for lib in /usr/lib/*/faketime/libfaketime.so.1 /usr/lib/faketime/libfaketime.so.1 /usr/local/lib/faketime/libfaketime.so.1; do
    if [ -f "$lib" ]; then
      printf '%s\n' "$lib"
      return 0
    fi
  done
  return 1
}

missing=()
if bindir=$(find_bindir); then
  say "present: $bindir ($("$bindir/postgres" --version))"
else
  missing+=(postgresql)
fi
if lib=$(find_faketime); then
  say "present: libfaketime ($lib)"
else
  missing+=(faketime)
fi
[ "${#missing[@]}" -eq 0 ] && exit 0
# Without root, a missing libfaketime alone is not fatal: the one test that needs it skips
# (outside CI) and says why.
only_faketime=0
[ "${missing[*]}" = "faketime" ] && only_faketime=1

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  say "missing: ${missing[*]}; installing needs root (or password-less sudo)."
  say "install Debian's packages yourself: apt-get update && apt-get install -y ${missing[*]}"
  [ "$only_faketime" -eq 1 ] && exit 0
  say "or point BK_OTEL_PG_BIN at a directory holding initdb, pg_ctl and postgres"
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  say "missing: ${missing[*]} and apt-get is not available: install PostgreSQL's server package"
  say "and libfaketime with this system's package manager, or set BK_OTEL_PG_BIN"
  exit 1
fi

# The tests start their own throwaway clusters: do not create (or start) the system's default one.
say "not found: ${missing[*]}; installing Debian's packages (postgresql without a default cluster)"
"${as_root[@]}" mkdir -p /etc/postgresql-common/createcluster.d
echo "create_main_cluster = false" | "${as_root[@]}" tee /etc/postgresql-common/createcluster.d/bk-otel-exporter.conf >/dev/null
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"

status=0
if bindir=$(find_bindir); then
  say "installed: $bindir ($("$bindir/postgres" --version))"
else
  say "apt-get installed postgresql, but initdb/pg_ctl/postgres are still not found"
  status=1
fi
if lib=$(find_faketime); then
  say "installed: libfaketime ($lib)"
else
  say "apt-get installed faketime, but libfaketime.so.1 is still not found"
  status=1
fi
exit "$status"
