#!/bin/sh
# The container's entrypoint: check the volumes, then exec `saferoom serve` (PID 1's child under tini), so that
# SIGTERM from the runtime reaches the server, which seals the audit log and stops cleanly.
#
#   (no arguments) or `serve [FLAGS]`  serve, with the volumes below and any extra `saferoom serve` flags
#   anything else                      run that saferoom command instead (`state check --state /state`, ...)
#
# Volumes: /data (datasets and catalog.json, mount read-only), /state (SQLite, audit log, packages: the only
# writable one), /pki (`saferoom certs init` output: ca.crt, server.crt, server.key, crl.pem).
set -eu

DATA="${SAFEROOM_DATA_DIR:-/data}"
STATE="${SAFEROOM_STATE_DIR:-/state}"
PKI="${SAFEROOM_PKI_DIR:-/pki}"
LISTEN="${SAFEROOM_LISTEN:-0.0.0.0:50051}"
# Loopback inside the container unless the deployment publishes it deliberately (compose: host loopback only).
METRICS="${SAFEROOM_METRICS_LISTEN:-127.0.0.1:9464}"
LOG_FORMAT="${SAFEROOM_LOG_FORMAT:-json}"
# The saferoom command (tests run this script outside a container with `python -m saferoom`).
SAFEROOM="${SAFEROOM_COMMAND:-saferoom}"

fail() {
    echo "saferoom-entrypoint: $*" >&2
    exit 64
}

if [ "$#" -gt 0 ] && [ "$1" != "serve" ]; then
    # shellcheck disable=SC2086  # SAFEROOM may be a command with arguments
    exec $SAFEROOM "$@"
fi
if [ "$#" -gt 0 ]; then shift; fi

[ -f "$DATA/catalog.json" ] || fail "no catalog.json in $DATA: mount the datasets volume there (read-only)"
for file in ca.crt server.crt server.key; do
    [ -f "$PKI/$file" ] || fail "no $file in $PKI: mount the output of 'saferoom certs init' there"
done
mkdir -p "$STATE" 2>/dev/null || true
[ -d "$STATE" ] && [ -w "$STATE" ] || fail "$STATE is not a directory writable by uid $(id -u): give the state volume to it"

# shellcheck disable=SC2086
exec $SAFEROOM serve --data "$DATA" --state "$STATE" --pki "$PKI" --listen "$LISTEN" \
    --metrics-listen "$METRICS" --log-format "$LOG_FORMAT" "$@"
