#!/usr/bin/env bash
# Make sure the Prometheus server and promtool are installed, for the tests that scrape a running
# exporter and check the alert rules and the dashboard (tests/support/prometheus.py). Idempotent:
# when they are present it says where and exits 0; otherwise it installs Debian's `prometheus`
# package with apt-get (as root, or through sudo) without starting the system's service, and checks
# again.
#
# Looks where the tests look: $BK_OTEL_PROMETHEUS_BIN (a directory holding prometheus and promtool),
# then PATH, then /usr/bin.
set -euo pipefail

say() { printf 'ensure-prometheus: %s\n' "$*"; }

has_tools() {
  local dir=$1
  [ -n "$dir" ] && [ -x "$dir/prometheus" ] && [ -x "$dir/promtool" ]
}

find_bindir() {
  local candidates=() dir
  [ -n "${BK_OTEL_PROMETHEUS_BIN:-}" ] && candidates+=("$BK_OTEL_PROMETHEUS_BIN")
  if command -v prometheus >/dev/null 2>&1; then
    candidates+=("$(dirname "$(readlink -f "$(command -v prometheus)")")")
  fi
  candidates+=(/usr/bin /usr/local/bin)
  for dir in "${candidates[@]}"; do
    if has_tools "$dir"; then
      printf '%s\n' "$dir"
      return 0
    fi
  done
  return 1
}

version() { "$1/prometheus" --version 2>&1 | head -n 1; }

if bindir=$(find_bindir); then
  say "present: $bindir ($(version "$bindir"))"
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  say "prometheus/promtool not found, and installing them needs root (or password-less sudo)."
  say "install Debian's package yourself: apt-get update && apt-get install -y --no-install-recommends prometheus"
  say "or point BK_OTEL_PROMETHEUS_BIN at a directory holding prometheus and promtool"
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  say "prometheus/promtool not found and apt-get is not available: install Prometheus with this"
  say "system's package manager, or set BK_OTEL_PROMETHEUS_BIN"
  exit 1
fi

# The tests start their own Prometheus on loopback: keep the package's service from being started
# by its maintainer scripts (policy-rc.d answers "not now" to invoke-rc.d while we install).
say "not found; installing Debian's prometheus package (its service not started)"
policy=/usr/sbin/policy-rc.d
created_policy=no
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee "$policy" >/dev/null
  "${as_root[@]}" chmod 0755 "$policy"
  created_policy=yes
fi
cleanup() { if [ "$created_policy" = yes ]; then "${as_root[@]}" rm -f "$policy"; fi; }
trap cleanup EXIT
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus

if bindir=$(find_bindir); then
  say "installed: $bindir ($(version "$bindir"))"
  exit 0
fi
say "apt-get installed prometheus, but prometheus/promtool are still not found"
exit 1
