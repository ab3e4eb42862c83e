#!/bin/sh
# kms-host on 127.0.0.1:PORT with its admin endpoint on PORT+1000, and, with
# --poll, the dashboard and the JSON API fetched once a second (the load
# figure of the admin endpoint in benches/README.md). Stops both on SIGTERM.
#   benches/admin-poll.sh PORT [--poll] [KMS-HOST FLAGS…]
set -u
port=$1
shift
poll=
if [ "${1:-}" = "--poll" ]; then
  poll=1
  shift
fi
admin=127.0.0.1:$((port + 1000))
RUST_LOG=warn "${KMS_HOST:-target/release/kms-host}" --listen "127.0.0.1:$port" --admin "$admin" "$@" &
host=$!
poller=
if [ -n "$poll" ]; then
  (
    while sleep 1; do
      for path in / /api/v1/status '/api/v1/clients?limit=100' '/api/v1/activations?limit=100' /metrics; do
        curl -s -o /dev/null "http://$admin$path"
      done
    done
  ) &
  poller=$!
fi
trap 'kill $host $poller 2>/dev/null; wait; exit 0' TERM INT
wait $host
