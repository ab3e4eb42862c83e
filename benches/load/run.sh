#!/usr/bin/env bash
# Load comparison of kms-host against the I/O floor (nullhost) and, when
# VLMCSD_DIR is set, vlmcsd, in one interleaved run with ../shared/bench.
# Not part of CI: timed figures belong in benches/README.md, not in tests.
#
#   benches/load/run.sh                 # 2 × 5 s per cell, conc 64, new + keepalive
#   VLMCSD_DIR=/tmp/vlmcsd REPEAT=3 DURATION=10 CONC=1,64 benches/load/run.sh
#   SQLITE=1 benches/load/run.sh        # also kms-host on the SQLite store
#   benches/load/run.sh idle            # 10 000 idle connections: kms-host's RSS
#
# kms-host runs with --skew off: kmsload replays a capture whose client time is
# fixed, which a host checking the clock (±4 h by default) would refuse. Genuine
# counting then sees the capture's one CMID over and over (count 1).
set -euo pipefail
cd "$(dirname "$0")/../.."

SHARED=${SHARED:-../shared}
VECTOR=${VECTOR:-$SHARED/vectors/v6-ndr32-btfn-win10ent.json}
TOOLS=target/bench-tools/release

cargo build --release --features cli --bin kms-host
cargo build --release --manifest-path "$SHARED/bench/kmsload/Cargo.toml" --target-dir target/bench-tools
cargo build --release --manifest-path "$SHARED/bench/nullhost/Cargo.toml" --target-dir target/bench-tools

HOST="target/release/kms-host --skew off"

if [[ "${1:-}" == idle ]]; then
    exec python3 benches/load/idle_rss.py --count "${COUNT:-10000}" --vector "$VECTOR" \
        "$HOST --listen 127.0.0.1:{port} --idle-timeout 600 --max-connections ${COUNT:-10000}"
fi

servers=("kms-host=$HOST --listen 127.0.0.1:{port}")
if [[ -n "${SQLITE:-}" ]]; then
    # The same host on the SQLite store (a fresh file per run).
    rm -f target/load-store.sqlite*
    servers+=("kms-host-sqlite=$HOST --store sqlite:target/load-store.sqlite --listen 127.0.0.1:{port}")
fi
if [[ -n "${VLMCSD_DIR:-}" ]]; then
    servers+=("vlmcsd=$VLMCSD_DIR/bin/vlmcsd -D -L 127.0.0.1:{port}")
fi
servers+=("floor=$TOOLS/nullhost $VECTOR 127.0.0.1:{port} 2")

# RUST_LOG=warn: no log line per activation during the run.
RUST_LOG=warn KMSLOAD=$TOOLS/kmsload python3 "$SHARED/bench/kmsload/scripts/compare.py" \
    --vector "$VECTOR" --conc "${CONC:-64}" --modes "${MODES:-new,keepalive}" \
    --duration "${DURATION:-5}" --repeat "${REPEAT:-2}" "${servers[@]}"
